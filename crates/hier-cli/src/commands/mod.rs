pub mod bench;
pub mod compare;
pub mod data;
pub mod eval;
pub mod forward;
pub mod generate;
pub mod init;
pub mod train;
