use super::*;

fn limits() -> Limits {
    crate::Config::for_tests("http://127.0.0.1:1").limits
}

fn caller() -> Caller {
    Caller {
        user: UserId(Uuid::now_v7()),
        device: DeviceId(Uuid::now_v7()),
    }
}

fn envelope(caller: Caller, recipients: &[DeviceId]) -> e2ee::Envelope {
    e2ee::Envelope {
        suite: e2ee::SUITE_V1,
        conversation_id: Uuid::now_v7().to_string(),
        sender_user_id: caller.user.to_string(),
        sender_device_id: caller.device.to_string(),
        client_message_id: "m1".to_owned(),
        nonce: vec![0; 12],
        ciphertext: vec![0; 40],
        wrapped_keys: recipients
            .iter()
            .map(|device| e2ee::WrappedKey {
                device_id: device.to_string(),
                key_fingerprint: vec![1; 32],
                wrapped_key: vec![2; 256],
                ..e2ee::WrappedKey::default()
            })
            .collect(),
        key_commitment: vec![0; 32],
        signature: vec![0; 64],
        ..e2ee::Envelope::default()
    }
}

fn device(id: DeviceId, fingerprint: u8) -> ActiveDevice {
    ActiveDevice {
        device_id: id,
        encryption_key_fingerprint: vec![fingerprint; 32],
        signing_public_key: vec![0; 32],
    }
}

#[test]
fn a_well_formed_envelope_passes_the_shape_check() {
    let caller = caller();
    let peer = DeviceId(Uuid::now_v7());

    let checked = check_envelope(&envelope(caller, &[peer]), caller, &limits()).unwrap();

    assert_eq!(checked.recipients.len(), 1);
    assert_eq!(checked.recipients[0].device, peer);
}

#[test]
fn every_limit_of_the_shape_check_is_enforced() {
    let caller = caller();
    let peer = DeviceId(Uuid::now_v7());
    let good = envelope(caller, &[peer]);
    let limits = limits();
    let mut twice = good.clone();
    twice.wrapped_keys.push(twice.wrapped_keys[0].clone());
    let mut huge_key = good.clone();
    huge_key.wrapped_keys[0].wrapped_key = vec![0; limits.max_wrapped_key_bytes + 1];
    let cases = [
        e2ee::Envelope {
            suite: 0,
            ..good.clone()
        },
        e2ee::Envelope {
            client_message_id: String::new(),
            ..good.clone()
        },
        // 64 characters are fine even when they take more bytes; 65 are not.
        e2ee::Envelope {
            client_message_id: "é".repeat(65),
            ..good.clone()
        },
        e2ee::Envelope {
            ciphertext: vec![0; 15],
            ..good.clone()
        },
        e2ee::Envelope {
            ciphertext: vec![0; limits.max_ciphertext_bytes + 1],
            ..good.clone()
        },
        e2ee::Envelope {
            nonce: vec![0; 13],
            ..good.clone()
        },
        twice,
        huge_key,
    ];

    for case in cases {
        assert!(
            matches!(
                check_envelope(&case, caller, &limits),
                Err(Error::InvalidArgument(_))
            ),
            "{case:?}"
        );
    }
    let sixty_four = e2ee::Envelope {
        client_message_id: "é".repeat(64),
        ..good
    };
    assert!(check_envelope(&sixty_four, caller, &limits).is_ok());
}

#[test]
fn an_envelope_naming_another_sender_is_a_signature_error() {
    let caller = caller();
    let other = Caller {
        device: DeviceId(Uuid::now_v7()),
        ..caller
    };

    let result = check_envelope(&envelope(other, &[caller.device]), caller, &limits());

    assert!(matches!(result, Err(Error::SignatureInvalid(_))));
}

#[test]
fn the_recipient_check_reports_missing_extra_and_stale_devices_sorted() {
    let sender = caller();
    let (peer, peer_other, stale_one, stranger) = (
        DeviceId(Uuid::now_v7()),
        DeviceId(Uuid::now_v7()),
        DeviceId(Uuid::now_v7()),
        DeviceId(Uuid::now_v7()),
    );
    let devices = HashMap::from([
        (
            sender.user,
            Arc::from([device(sender.device, 1), device(stale_one, 9)]),
        ),
        (
            UserId(Uuid::now_v7()),
            Arc::from([device(peer, 1), device(peer_other, 1)]),
        ),
    ]);
    let wrapped = check_envelope(
        &envelope(sender, &[peer, stale_one, stranger]),
        sender,
        &limits(),
    )
    .unwrap()
    .recipients;

    let Err(Error::DeviceListMismatch(mismatch)) =
        check_recipients(&wrapped, &devices, sender.device)
    else {
        panic!("expected a mismatch");
    };

    assert_eq!(mismatch.missing, [peer_other.to_string()]);
    assert_eq!(mismatch.extra, [stranger.to_string()]);
    assert_eq!(mismatch.stale, [stale_one.to_string()]);
}

#[test]
fn the_sending_device_may_be_a_recipient_or_not() {
    let sender = caller();
    let peer = DeviceId(Uuid::now_v7());
    let devices = HashMap::from([
        (sender.user, Arc::from([device(sender.device, 1)])),
        (UserId(Uuid::now_v7()), Arc::from([device(peer, 1)])),
    ]);
    let without_self = check_envelope(&envelope(sender, &[peer]), sender, &limits()).unwrap();
    let with_self =
        check_envelope(&envelope(sender, &[peer, sender.device]), sender, &limits()).unwrap();

    assert!(check_recipients(&without_self.recipients, &devices, sender.device).is_ok());
    assert!(check_recipients(&with_self.recipients, &devices, sender.device).is_ok());
}

#[test]
fn a_retry_matches_only_the_same_conversation_and_signature() {
    let conversation = ConversationId(Uuid::now_v7());
    let stored = || StoredMessage {
        conversation,
        signature: vec![7; 64],
        committed: Committed {
            message_id: Uuid::now_v7(),
            sequence: 3,
            sent_at: OffsetDateTime::UNIX_EPOCH,
            duplicate: false,
        },
    };

    let same = stored().answer_retry(conversation, &[7; 64]).unwrap();
    let other_signature = stored().answer_retry(conversation, &[8; 64]);
    let other_conversation = stored().answer_retry(ConversationId(Uuid::now_v7()), &[7; 64]);

    assert!(same.duplicate);
    assert_eq!(same.sequence, 3);
    assert!(matches!(other_signature, Err(Error::ClientMessageIdReused)));
    assert!(matches!(
        other_conversation,
        Err(Error::ClientMessageIdReused)
    ));
}
