"""The API layer: gRPC servicers and the HTTP/JSON transcoder. It only translates; logic is in service/."""
