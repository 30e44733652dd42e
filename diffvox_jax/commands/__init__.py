"""One module per `diffvox` sub-command: each defines `define_flags()` and `main(argv)`."""
