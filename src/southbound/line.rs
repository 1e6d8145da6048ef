//! Serial line settings shared by the `modbus-rtu` and `serial` kinds: the
//! one `parity` type of the YAML file, its short letter for plans (`8E1`) and
//! its tokio-serial form.
//!
//! Owns only these value types. Must not open ports.

use serde::Deserialize;

/// `parity: none | even | odd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

impl Parity {
    /// `N`, `E` or `O`, as in `9600 8E1`.
    pub fn letter(self) -> char {
        match self {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        }
    }
}

impl From<Parity> for tokio_serial::Parity {
    fn from(p: Parity) -> Self {
        match p {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        }
    }
}
