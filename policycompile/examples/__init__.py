"""Small, dependency-free models the demo and the tests run policies against."""
