//! What the `weir` binary runs besides the server and the shell: event generators
//! (`weir gen`) and benchmarks (`weir bench`). They use the libraries as any client would.

pub mod bench;
pub mod bench_kafka;
pub mod generate;
