"""Search in the store: the index tables written with every current version (`indexing`), and
searches compiled to SQL over them (`query`). The only SQL of search; the parameters themselves
live in `fhir_app.fhir.search`.

Nothing is imported here: `fhir_app.store.repository` writes the index through `indexing`,
and `query` reads through the repository's helpers.
"""
