"""One module per command; each exports a function that takes keyword arguments and returns an ExitCode."""
