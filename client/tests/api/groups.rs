use sqlx::PgPool;

use crate::helpers::{next_texts, spawn_env, text_of, until_caught_up};

#[sqlx::test(migrations = "../migrations")]
async fn groups_are_created_renamed_and_their_membership_managed(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let _carol = env.user("carol").await;

    let created = alice
        .create_group("friends", &["bob".to_owned()])
        .await
        .unwrap();
    alice
        .add_members("friends", &["carol".to_owned()])
        .await
        .unwrap();
    let renamed = alice.rename_group("#friends", "pals").await.unwrap();
    let members = alice.group_members("pals").await.unwrap();
    alice.remove_member("pals", "carol").await.unwrap();
    bob.leave_group(&created.group_id).await.unwrap();

    assert_eq!(created.role, "owner");
    assert_eq!(created.member_count, 2);
    assert_eq!(renamed.name, "pals");
    let mut names: Vec<(String, &str)> = members
        .iter()
        .map(|m| (m.username.clone(), m.role))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("alice".to_owned(), "owner"),
            ("bob".to_owned(), "member"),
            ("carol".to_owned(), "member")
        ]
    );
    assert_eq!(alice.groups().await.unwrap()[0].member_count, 1);
    assert!(bob.groups().await.unwrap().is_empty());
    assert!(matches!(
        bob.find_group("pals").await,
        Err(client::Error::NotFound(..))
    ));
}

#[sqlx::test(migrations = "../migrations")]
async fn three_users_exchange_group_messages(db: PgPool) {
    let env = spawn_env(db).await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let carol = env.user("carol").await;
    alice
        .create_group("friends", &["bob".to_owned(), "carol".to_owned()])
        .await
        .unwrap();
    let carols_view = carol.resolve("#friends").await.unwrap();
    let mut carol_live = carol.clone().live(carols_view);
    until_caught_up(&mut carol_live).await;

    let group = alice.resolve("#friends").await.unwrap();
    alice.send_text(&group, "hello group").await.unwrap();
    let bobs_view = bob.resolve("#friends").await.unwrap();
    bob.send_text(&bobs_view, "hi all").await.unwrap();

    assert_eq!(
        next_texts(&mut carol_live, 2).await,
        [(1, "hello group".to_owned()), (2, "hi all".to_owned())]
    );
    alice.remove_member("friends", "carol").await.unwrap();
    let after_removal = alice.send_text(&group, "just us now").await.unwrap();
    let history = bob.history(&bobs_view, 10).await.unwrap();
    assert_eq!(
        history.iter().map(text_of).collect::<Vec<_>>(),
        ["hello group", "hi all", "just us now"]
    );
    assert_eq!(after_removal.sequence, 3);
    let listed = alice.conversations().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|c| c.with == "#friends" && c.kind == "group"),
        "{listed:?}"
    );
}
