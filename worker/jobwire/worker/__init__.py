"""The jobwire worker SDK (see issue 3); it never imports the server."""
