"""The end-to-end demo: certificates, a server, three brands, a report, the query log.

The one server package that imports the partner toolkit, since it plays the brands beside
the server; it starts the server as an operator would and imports the layers below it.
"""
