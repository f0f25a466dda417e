//! `[kafka.properties]`: librdkafka settings passed through to the consumer and producer,
//! for connection security (`security.protocol = "SASL_SSL"`, `sasl.mechanism`,
//! `sasl.username`, `sasl.password`, `ssl.ca.location`, …) or any other tuning. They are
//! applied first, so the settings kiln's delivery guarantees rest on (offset storage,
//! auto-commit, group) override a clash.

use crate::config::KafkaConfig;
use rdkafka::config::ClientConfig;

/// A client config holding the configured pass-through properties.
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// The consumer's: the pass-through properties, and static membership (`group.instance.id`)
/// when `kafka.instance_id` is set.
pub fn consumer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = client_config(cfg);
    if let Some(id) = &cfg.instance_id {
        c.set("group.instance.id", id);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_pass_through() {
        let mut cfg = KafkaConfig::default();
        cfg.properties.insert("security.protocol".into(), "SASL_SSL".into());
        cfg.properties.insert("sasl.mechanism".into(), "PLAIN".into());
        let c = client_config(&cfg);
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(consumer_config(&cfg).get("group.instance.id"), None);
        cfg.instance_id = Some("kiln-gpu-0".into());
        assert_eq!(consumer_config(&cfg).get("group.instance.id"), Some("kiln-gpu-0"));
        assert_eq!(client_config(&cfg).get("group.instance.id"), None, "the producer has no group");
    }
}
