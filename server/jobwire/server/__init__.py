"""The jobwire server: a grpc.aio job service on Postgres with Runpod's /v2 REST facade."""
