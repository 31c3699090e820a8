"""The station application: configuration, the bench, jobs, orders and custody, the store, audit, reporting, CLI."""
