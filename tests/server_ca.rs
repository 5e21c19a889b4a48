//! Issue 12: a server started with `--tls-cert`/`--tls-key` of a certificate a CA
//! signed is verified the usual way by a client given that CA (`--server-ca`): no pin
//! question, the name checked; a wrong name or a leaf from another CA is refused.
//!
//! The CA and the leaves are made here with rcgen; the real `peerchat-server` and
//! `peerchat-client` binaries run.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{Client, Server};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

const PW: &str = "correct horse battery";

/// A CA: its PEM certificate and the issuer to sign leaves with.
fn make_ca(name: &str) -> (String, CertifiedIssuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    (issuer.pem(), issuer)
}

/// A leaf for `names` signed by `ca`, written as `<dir>/<tag>.crt` (leaf then CA) and
/// `<dir>/<tag>.key`; returns the two paths as strings.
fn make_leaf(
    dir: &Path,
    tag: &str,
    names: &[&str],
    ca: &CertifiedIssuer<'static, KeyPair>,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let leaf = params.signed_by(&key, ca).unwrap();
    let cert = dir.join(format!("{tag}.crt"));
    let key_path = dir.join(format!("{tag}.key"));
    fs::write(&cert, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    fs::write(&key_path, key.serialize_pem()).unwrap();
    (
        cert.to_str().unwrap().to_string(),
        key_path.to_str().unwrap().to_string(),
    )
}

/// A client of `server` given only `args` about trust (no fingerprint from the harness).
fn client(server: &Server, data: &Path, args: &[&str]) -> Client {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerchat-client"));
    cmd.arg("--server")
        .arg(server.addr.to_string())
        .arg("--data-dir")
        .arg(data)
        .arg("--port")
        .arg("0")
        .args(args);
    Client::spawn_command(cmd)
}

fn registers(c: &mut Client, name: &str) {
    c.expect("Are you a new client? (Y/N): ");
    c.send("y");
    c.expect("Choose a username: ");
    c.send(name);
    c.expect("Choose a password: ");
    c.send(PW);
    c.expect(&format!("Registered as {name}."));
    c.expect_welcome(name, 0);
}

/// Waits for `c` to give up; it must say why, plainly, and fail. Returns what it said.
fn refused(c: &mut Client) -> String {
    let status = c.wait_exit();
    let said = format!("{}{}", c.output(), c.stderr());
    assert!(!status.success(), "the client went on:\n{said}");
    assert!(
        said.contains("does not verify against the CA in") && said.contains("nothing was sent"),
        "the client did not say why:\n{said}"
    );
    assert!(!said.contains("Choose a username"), "{said}");
    said
}

#[test]
fn a_ca_signed_server_certificate_is_verified_and_needs_no_pin() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, ca) = make_ca("peerchat test CA");
    let ca_file = dir.path().join("ca.pem");
    fs::write(&ca_file, &ca_pem).unwrap();
    let ca_arg = ca_file.to_str().unwrap();
    let (cert, key) = make_leaf(dir.path(), "leaf", &["chat.example", "127.0.0.1"], &ca);
    let server = Server::builder()
        .args(&["--tls-cert", &cert, "--tls-key", &key])
        .start();

    // The CA vouches for 127.0.0.1 (the host of --server): no trust question, and
    // nothing is pinned.
    let data = dir.path().join("alice-data");
    let mut alice = client(&server, &data, &["--server-ca", ca_arg]);
    registers(&mut alice, "alice");
    assert!(
        !alice.output().contains("fingerprint"),
        "a CA-verified server asked about its fingerprint:\n{}",
        alice.output()
    );
    assert!(
        !data.join("server-pins").exists(),
        "a CA-verified server was pinned"
    );

    // The name given with --server-name is checked too: one the leaf carries passes ...
    let mut bob = client(
        &server,
        &dir.path().join("bob-data"),
        &["--server-ca", ca_arg, "--server-name", "chat.example"],
    );
    registers(&mut bob, "bob");

    // ... one it does not carry is refused before anything is sent.
    let mut carol = client(
        &server,
        &dir.path().join("carol-data"),
        &["--server-ca", ca_arg, "--server-name", "other.example"],
    );
    let said = refused(&mut carol);
    assert!(said.contains("for the name other.example"), "{said}");
}

#[test]
fn a_leaf_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, _ca) = make_ca("the CA the client trusts");
    let (_, other) = make_ca("another CA");
    let ca_file = dir.path().join("ca.pem");
    fs::write(&ca_file, &ca_pem).unwrap();
    let (cert, key) = make_leaf(dir.path(), "leaf", &["localhost", "127.0.0.1"], &other);
    let server = Server::builder()
        .args(&["--tls-cert", &cert, "--tls-key", &key])
        .start();
    let mut mallory_served = client(
        &server,
        &dir.path().join("alice-data"),
        &["--server-ca", ca_file.to_str().unwrap()],
    );
    let said = refused(&mut mallory_served);
    assert!(said.contains("UnknownIssuer"), "{said}");
    // The server never saw a login from it.
    assert!(
        !server.log_text().contains("alice"),
        "the refused client logged in:\n{}",
        server.log_text()
    );
}
