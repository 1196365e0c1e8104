//! Complete, commented example configs, as `fwcfg example` prints them and `deploy/` ships them.

/// Example `gateway.toml`.
pub const GATEWAY: &str = include_str!("../templates/gateway.toml");

/// Example `central.toml`.
pub const CENTRAL: &str = include_str!("../templates/central.toml");

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{self, CentralConfig, GatewayConfig};

    #[test]
    fn gateway_example_is_valid_and_complete() {
        // The files it names are on a gateway, not here.
        let cfg: GatewayConfig = config::parse_elsewhere(super::GATEWAY, Path::new("/")).unwrap();
        assert_eq!(cfg.cameras.len(), 2);
        assert_eq!(cfg.terminals.len(), 3);
        assert_eq!(cfg.cameras[0].sensing.motion_zones.len(), 1);
    }

    #[test]
    fn central_example_is_valid() {
        let cfg: CentralConfig = config::parse_elsewhere(super::CENTRAL, Path::new("/")).unwrap();
        assert!(cfg.broker.embedded.is_some());
    }
}
