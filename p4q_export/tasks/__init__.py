"""One module per command that has logic: a task takes a request (or plain arguments), checks it,
runs the library and returns the result dict the command prints. Tasks never print; `commands/`
parse options, call one task and print its result."""
