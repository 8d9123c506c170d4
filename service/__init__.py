"""The service layer: HTTP app, state stores, batch jobs and the ``statecast`` command line."""
