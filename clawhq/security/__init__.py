"""Security checks over typed engine facts: CIS Docker Benchmark section 5, as code."""
