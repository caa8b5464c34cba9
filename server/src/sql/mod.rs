//! Client SQL on the writer connection: what it may do ([`authorizer`]), how it
//! runs ([`exec`]), and every decision made by reading its text ([`text`]).

pub mod authorizer;
pub mod exec;
pub mod text;
