"""The gateway's HTTP front end: KServe v2 REST routes, thin over the same app layer as gRPC."""
