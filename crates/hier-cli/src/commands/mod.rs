pub mod forward;
pub mod generate;
pub mod init;
