"""Small, complete environments that the README shows and the tests run."""
