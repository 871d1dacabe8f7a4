"""tidlc.frontends.caffe package."""
