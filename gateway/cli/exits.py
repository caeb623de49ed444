"""The ``gateway`` command's exit codes: 0 done, 1 the job failed, 2 bad input (a flag or
a file the command cannot take)."""

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
