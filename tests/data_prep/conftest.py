"""Fixtures for the data_prep tests (helpers live in prep_helpers.py, a name unique across tests/; the tools are
imported as the package ``data_prep``)."""
