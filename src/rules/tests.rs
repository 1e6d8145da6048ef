//! Unit tests of the rules API, engine and reload, and of the example
//! scripts in plugins/.
