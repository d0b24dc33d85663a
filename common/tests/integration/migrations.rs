use sqlx::PgPool;

#[sqlx::test(migrations = false)]
async fn migrations_create_one_schema_per_service(db: PgPool) {
    common::db::MIGRATOR.run(&db).await.unwrap();

    let schemas: Vec<String> = sqlx::query_scalar(
        "select schema_name::text from information_schema.schemata
         where schema_name in ('auth', 'chat', 'groups') order by 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(schemas, ["auth", "chat", "groups"]);
}

#[sqlx::test(migrations = false)]
async fn running_the_migrations_twice_changes_nothing(db: PgPool) {
    common::db::MIGRATOR.run(&db).await.unwrap();

    common::db::MIGRATOR.run(&db).await.unwrap();

    let applied: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(applied, common::db::MIGRATOR.iter().count() as i64);
}

#[sqlx::test(migrations = "../migrations")]
async fn no_foreign_key_crosses_from_one_service_schema_to_another(db: PgPool) {
    let crossing: Vec<String> = sqlx::query_scalar(
        "select con.conname::text
         from pg_constraint con
         join pg_class src on src.oid = con.conrelid
         join pg_class dst on dst.oid = con.confrelid
         where con.contype = 'f' and src.relnamespace <> dst.relnamespace",
    )
    .fetch_all(&db)
    .await
    .unwrap();

    assert!(
        crossing.is_empty(),
        "cross-schema foreign keys: {crossing:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn every_message_table_holds_no_plaintext_column(db: PgPool) {
    let columns: Vec<String> = sqlx::query_scalar(
        "select column_name::text from information_schema.columns
         where table_schema = 'chat' and table_name = 'messages' order by ordinal_position",
    )
    .fetch_all(&db)
    .await
    .unwrap();

    for forbidden in ["body", "text", "plaintext", "content"] {
        assert!(!columns.iter().any(|c| c == forbidden), "{columns:?}");
    }
    assert!(columns.iter().any(|c| c == "ciphertext"), "{columns:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn message_sequences_are_unique_per_conversation(db: PgPool) {
    let conversation = uuid_v4(&db).await;
    let (low, high) = ordered_pair(&db).await;
    sqlx::query(
        "insert into chat.conversations (id, kind, direct_user_low, direct_user_high)
         values ($1, 'direct', $2, $3)",
    )
    .bind(conversation)
    .bind(low)
    .bind(high)
    .execute(&db)
    .await
    .unwrap();
    let insert = |client_message_id: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query(
                "insert into chat.messages (conversation_id, sequence, id, sender_user_id,
                   sender_device_id, client_message_id, suite, nonce, ciphertext, key_commitment,
                   signature, recipients_digest)
                 values ($1, 1, gen_random_uuid(), $2, gen_random_uuid(), $3, 1,
                   decode(repeat('00', 12), 'hex'), '\\x01', decode(repeat('00', 32), 'hex'),
                   decode(repeat('00', 64), 'hex'), decode(repeat('00', 32), 'hex'))",
            )
            .bind(conversation)
            .bind(low)
            .bind(client_message_id)
            .execute(&db)
            .await
        }
    };

    insert("first").await.unwrap();
    let error = insert("second").await.unwrap_err();

    let constraint = error.as_database_error().and_then(|e| e.constraint());
    assert_eq!(constraint, Some("messages_pkey"));
}

async fn uuid_v4(db: &PgPool) -> sqlx::types::Uuid {
    sqlx::query_scalar("select gen_random_uuid()")
        .fetch_one(db)
        .await
        .unwrap()
}

async fn ordered_pair(db: &PgPool) -> (sqlx::types::Uuid, sqlx::types::Uuid) {
    let (a, b) = (uuid_v4(db).await, uuid_v4(db).await);
    if a < b { (a, b) } else { (b, a) }
}
