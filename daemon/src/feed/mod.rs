//! Dataset → batches in shared memory: the server, streams, items, augmentation, sampling,
//! the decoded-audio cache, manifests and shards (WebDataset, Lhotse Shar, NeMo tarred), rings and slots, the worker pool and the tuner.

pub mod augment;
pub mod cache;
pub mod client;
pub mod item;
pub mod manifest;
pub mod nemo;
pub mod pool;
pub mod ring;
pub mod sampler;
pub mod server;
pub mod shar;
pub mod slots;
pub mod stats;
pub mod stream;
pub mod tune;
pub mod webdataset;
pub mod wire;
