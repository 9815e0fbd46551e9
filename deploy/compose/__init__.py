"""`deploy/compose.yaml`'s helpers: its credentials (`credentials`) and its one-shot set-up (`provision`)."""
