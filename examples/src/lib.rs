//! Example applications that use distcache. Empty until the SDK lands; see
//! README.md for talking to a node with grpcurl in the meantime.
