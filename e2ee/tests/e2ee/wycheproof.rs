//! Project Wycheproof vectors run through `e2ee::primitives`, the functions the envelope code
//! calls, with the parameters it uses. The files live outside the repository, in
//! `$CI_SHARED_DIR/testvectors/` (default `../shared/testvectors` beside the repository, then
//! `/work/shared/testvectors`); a missing file fails the test, it never skips it.

use std::path::PathBuf;

use e2ee::{Error, primitives};
use serde_json::Value;

use crate::schema::unhex;

fn testvectors_dir() -> PathBuf {
    if let Ok(shared) = std::env::var("CI_SHARED_DIR") {
        return PathBuf::from(shared).join("testvectors");
    }
    let candidates = [
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/testvectors"
        )),
        PathBuf::from("/work/shared/testvectors"),
    ];
    candidates
        .iter()
        .find(|dir| dir.is_dir())
        .cloned()
        .unwrap_or_else(|| {
            panic!("no Wycheproof vectors: set CI_SHARED_DIR (tried {candidates:?})")
        })
}

fn load(file: &str) -> Value {
    let path = testvectors_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Every test of every group, with its group.
fn tests(vectors: &Value) -> Vec<(&Value, &Value)> {
    vectors["testGroups"]
        .as_array()
        .expect("testGroups")
        .iter()
        .flat_map(|group| {
            group["tests"]
                .as_array()
                .expect("tests")
                .iter()
                .map(move |test| (group, test))
        })
        .collect()
}

fn field<'a>(value: &'a Value, name: &str) -> &'a str {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("no string {name} in {value}"))
}

fn is_valid(test: &Value) -> bool {
    match field(test, "result") {
        "valid" => true,
        "invalid" => false,
        other => panic!("unexpected result {other:?} in {test}"),
    }
}

#[test]
fn aes_256_gcm_siv_with_96_bit_nonces_passes_every_wycheproof_vector() {
    let vectors = load("aes_gcm_siv_test.json");
    let mut run = 0;

    for (group, test) in tests(&vectors) {
        // The crate only uses 256-bit keys; the 128-bit groups do not apply.
        if group["keySize"] != 256 {
            continue;
        }
        assert_eq!(group["ivSize"], 96, "{group}");
        let id = &test["tcId"];
        let key: [u8; 32] = unhex(field(test, "key")).try_into().unwrap();
        let nonce: [u8; 12] = unhex(field(test, "iv")).try_into().unwrap();
        let (aad, msg) = (unhex(field(test, "aad")), unhex(field(test, "msg")));
        let sealed = [unhex(field(test, "ct")), unhex(field(test, "tag"))].concat();

        let opened = primitives::aead_decrypt(&key, &nonce, &aad, &sealed);

        if is_valid(test) {
            assert_eq!(opened.as_deref(), Ok(&msg[..]), "tcId {id}");
            let encrypted = primitives::aead_encrypt(&key, &nonce, &aad, &msg).unwrap();
            assert_eq!(encrypted, sealed, "tcId {id}");
        } else {
            assert_eq!(opened, Err(Error::DecryptFailed), "tcId {id}");
        }
        run += 1;
    }

    assert_eq!(run, 103, "the file's 256-bit vectors");
}

#[test]
fn ed25519_verification_passes_every_wycheproof_vector() {
    let vectors = load("ed25519_test.json");
    let mut run = 0;

    for (group, test) in tests(&vectors) {
        let id = &test["tcId"];
        let public_key = unhex(field(&group["publicKey"], "pk"));
        let (message, signature) = (unhex(field(test, "msg")), unhex(field(test, "sig")));

        let verified = primitives::ed25519_verify(&public_key, &message, &signature);

        if is_valid(test) {
            assert_eq!(verified, Ok(()), "tcId {id}");
        } else {
            assert!(verified.is_err(), "tcId {id} verified: {test}");
        }
        run += 1;
    }

    assert_eq!(run, vectors["numberOfTests"], "every vector");
}

#[test]
fn rsa_oaep_2048_sha256_decryption_passes_every_wycheproof_vector() {
    check_rsa_oaep("rsa_oaep_2048_sha256_mgf1sha256_test.json");
}

#[test]
fn rsa_oaep_3072_sha256_decryption_passes_every_wycheproof_vector() {
    check_rsa_oaep("rsa_oaep_3072_sha256_mgf1sha256_test.json");
}

/// The crate unwraps with the empty label only, so a ciphertext made with a label must fail
/// exactly like an invalid one; every other vector must give its result.
fn check_rsa_oaep(file: &str) {
    let vectors = load(file);
    let mut run = 0;

    for (group, test) in tests(&vectors) {
        assert_eq!(group["sha"], "SHA-256", "{file}");
        assert_eq!(group["mgfSha"], "SHA-256", "{file}");
        let id = &test["tcId"];
        let private_key =
            primitives::parse_rsa_private_key(&unhex(field(group, "privateKeyPkcs8"))).unwrap();
        let ciphertext = unhex(field(test, "ct"));

        let unwrapped = primitives::rsa_oaep_unwrap(&private_key, &ciphertext);

        if is_valid(test) && field(test, "label").is_empty() {
            let expected = unhex(field(test, "msg"));
            assert_eq!(
                unwrapped.as_ref().map(|message| &message[..]),
                Ok(&expected[..]),
                "{file} tcId {id}"
            );
        } else {
            assert_eq!(
                unwrapped.map(|message| message.to_vec()),
                Err(Error::UnwrapFailed),
                "{file} tcId {id}"
            );
        }
        run += 1;
    }

    assert_eq!(run, vectors["numberOfTests"], "{file}: every vector");
}
