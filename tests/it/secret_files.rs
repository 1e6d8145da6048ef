//! Secret files (passwords, password files, private keys): refused when
//! other users can read them (exit 78, with the `chmod` to run), and read
//! from systemd's credentials directory through `${CREDENTIALS_DIRECTORY}`.

use rumqttc::QoS;

use crate::modbus::SECS;
use crate::support::{ConfigDir, Gateway, Sub, free_port};

/// `fieldgate ARGS` with `env` set (or removed, for an empty value).
pub(crate) fn fieldgate_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = std::process::Command::new(crate::support::BIN);
    cmd.args(args);
    for (k, v) in env {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    let out = cmd.output().expect("run fieldgate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn secret_files_other_users_can_read_are_refused_with_the_chmod_to_run() {
    let cfg = ConfigDir::new("");
    let hmi = cfg.write("hmi.pw", "hmi-secret\n");
    let up = cfg.write("uplink.pw", "up-secret\n");
    let cert = cfg.write("client.pem", "a certificate\n");
    let key = cfg.write("client.key", "a key\n");
    chmod(&hmi, 0o644);
    chmod(&up, 0o604);
    // the group may read a secret: root:fieldgate 0640 is how the package
    // hands files to the service
    chmod(&key, 0o640);
    let yaml = format!(
        "gateway:\n  id: gw\n  data_dir: \"{}\"\nbroker:\n  users:\n    - {{ username: hmi, password_file: \"{}\" }}\nuplink:\n  url: mqtts://127.0.0.1:1\n  username: gw\n  password_file: \"{}\"\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  forward: [{{ filter: \"gw/#\" }}]\n",
        cfg.dir.path().join("data").display(),
        hmi.display(),
        up.display(),
        cert.display(),
        key.display()
    );
    std::fs::write(&cfg.path, &yaml).expect("write config");
    for verb in ["check", "run"] {
        let (code, text) = fieldgate_env(&[verb, "-c", cfg.path_str()], &[]);
        assert_eq!(code, 78, "{verb}: {text}");
        for want in [
            "broker.users[0].password_file (line 6".to_string(),
            format!(
                "secret file {} is open to every user on this machine (mode 0644)",
                hmi.display()
            ),
            format!("run `chmod 600 {}`", hmi.display()),
            "uplink.password_file (line 10".to_string(),
            "(mode 0604)".to_string(),
            "2 problems".to_string(),
        ] {
            assert!(text.contains(&want), "{verb}: {want:?} not in:\n{text}");
        }
    }
    chmod(&hmi, 0o600);
    chmod(&up, 0o640);
    let (code, text) = fieldgate_env(&["check", "-c", cfg.path_str()], &[]);
    assert_eq!(code, 0, "{text}");
}

/// systemd credentials: `LoadCredential=hmi:...` puts the file in
/// `$CREDENTIALS_DIRECTORY` (mode 0400), and the config names it as
/// `${CREDENTIALS_DIRECTORY}/hmi`.
#[tokio::test]
async fn a_password_file_in_the_credentials_directory_logs_in() {
    let creds = tempfile::tempdir().expect("tempdir");
    let file = creds.path().join("hmi");
    std::fs::write(&file, "from-systemd\n").expect("write credential");
    chmod(&file, 0o400);
    let dir = creds.path().to_str().expect("utf-8 path");
    let yaml = "gateway:\n  id: gw-cred\n  data_dir: \"{data_dir}\"\nbroker:\n  listen: \"127.0.0.1:{port}\"\n  users:\n    - { username: hmi, password_file: \"${CREDENTIALS_DIRECTORY}/hmi\" }\n";

    // outside the service the variable is not set: a config error naming it
    let cfg = ConfigDir::new(&crate::support::fill(yaml, free_port(), creds.path()));
    let (code, text) = fieldgate_env(
        &["check", "-c", cfg.path_str()],
        &[("CREDENTIALS_DIRECTORY", "")],
    );
    assert_eq!(code, 78, "{text}");
    assert!(
        text.contains("broker.users[0].password_file (line 7")
            && text.contains("${CREDENTIALS_DIRECTORY} is not set"),
        "{text}"
    );

    let gw = Gateway::start_with_env(yaml, &[("CREDENTIALS_DIRECTORY", dir)]);
    let mut o = crate::support::options("cred-hmi", gw.port);
    o.set_credentials("hmi", "from-systemd");
    let mut sub = Sub::connect_with(o, &["gw-cred/status"], QoS::AtLeastOnce).await;
    assert_eq!(
        sub.wait_topic("gw-cred/status", SECS).await.text(),
        "online"
    );
}
