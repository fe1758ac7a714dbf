"""One module per CLI command: parse the options, call one task (p4q_export/tasks/) and print its
result. No logic of their own (tests/test_structure.py checks the one task)."""
