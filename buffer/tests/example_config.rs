//! The shipped example config is valid and documents the real defaults.

use barrage::config::Config;

#[test]
fn example_config_parses_and_matches_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/barrage.example.toml");
    let example = Config::load(std::path::Path::new(path)).expect("example config loads");
    example.validate().expect("example config is valid");
    let defaults = Config::default();
    assert_eq!(
        format!("{:?}", example.smtp),
        format!("{:?}", defaults.smtp)
    );
    assert_eq!(
        format!("{:?}", example.http),
        format!("{:?}", defaults.http)
    );
    assert_eq!(format!("{:?}", example.web), format!("{:?}", defaults.web));
    assert_eq!(
        format!("{:?}", example.journal),
        format!("{:?}", defaults.journal)
    );
    assert_eq!(
        format!("{:?}", example.storage),
        format!("{:?}", defaults.storage)
    );
    assert_eq!(
        format!("{:?}", example.signing),
        format!("{:?}", defaults.signing)
    );
    assert_eq!(example.data_dir, defaults.data_dir);
    assert_eq!(example.hostname, defaults.hostname);
    assert_eq!(example.workers, defaults.workers);
    let ack = example.ack.expect("the example documents [ack]");
    assert_eq!(ack.recipient, barrage::ack::AckRecipient::default());
}

#[test]
fn unknown_keys_are_refused_with_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "[smtp]\nmax_conections = 5\n").unwrap();
    let error = format!("{:#}", Config::load(&path).unwrap_err());
    assert!(
        error.contains("typo.toml") && error.contains("max_conections"),
        "{error}"
    );
}
