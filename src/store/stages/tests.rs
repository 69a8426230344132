//! The stage store's tests: inserts, reads, updates (and what bumps `config_revision`),
//! deletes, hostname claims and secrets of stages, against a temporary SQLite store.

use std::collections::BTreeMap;

use super::super::testing::{at, new_project, new_stage, temp_store};
use super::*;
use crate::domain::instance::{InstanceStatus, NewInstance};
use crate::domain::stage::HealthCheck;

fn host(h: &str) -> Hostname {
    Hostname::parse(h).unwrap()
}

#[tokio::test]
async fn a_stage_round_trips_every_field_through_the_store() {
    let (store, _dir) = temp_store().await;
    let project = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
    let mut env = BTreeMap::new();
    env.insert("RUST_LOG".to_owned(), "info".to_owned());
    let new = NewStage {
        tag_policy: TagPolicy::parse("semver:^1.2").unwrap(),
        schedule: Some(Schedule::parse("@every 30s").unwrap()),
        auto_deploy: false,
        hostname: Some(host("shop.example.com")),
        max_instances: 3,
        min_release_age: Some(HumanDuration::parse("10m").unwrap()),
        container: ContainerSpec {
            port: 3000,
            env,
            command: Some(vec!["serve".into(), "--fast".into()]),
            health_check: Some(HealthCheck {
                path: "/healthz".into(),
                expected_status: 204,
            }),
            min_ready_seconds: 5,
            memory_mb: Some(256),
            cpus: Some(0.5),
            volumes: serde_json::from_str(r#"[{"source": "data", "target": "/data"}]"#).unwrap(),
            restart_policy: "on-failure:3".parse().unwrap(),
            stop_signal: "SIGQUIT".parse().unwrap(),
            ..ContainerSpec::default()
        },
        ..new_stage("prod")
    };
    let stage = store.insert_stage(project.id, &new, at(0)).await.unwrap();
    assert_eq!(stage.project_id, project.id);
    assert_eq!(stage.name, new.name);
    assert_eq!(stage.tag_policy, new.tag_policy);
    assert_eq!(stage.schedule, new.schedule);
    assert_eq!(stage.hostname, new.hostname);
    assert_eq!(stage.min_release_age, new.min_release_age);
    assert_eq!(stage.container, new.container);
    assert_eq!((stage.auto_deploy, stage.max_instances), (false, 3));
    assert_eq!(
        (stage.current_instance_id, stage.available_tag.as_deref()),
        (None, None)
    );
    assert_eq!(store.get_stage(stage.id).await.unwrap(), stage);
    assert_eq!(store.list_stages(project.id).await.unwrap(), vec![stage.clone()]);
    assert_eq!(store.list_all_stages().await.unwrap(), vec![stage.clone()]);
    assert_eq!(
        store.hostname_owner("shop.example.com").await.unwrap(),
        Some(("stage".into(), stage.id))
    );
}

#[tokio::test]
async fn a_stage_of_a_missing_project_is_not_found() {
    let (store, _dir) = temp_store().await;
    assert!(matches!(
        store.insert_stage(42, &new_stage("prod"), at(0)).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(store.list_stages(42).await, Err(StoreError::NotFound)));
}

#[tokio::test]
async fn stage_names_are_unique_within_a_project_only() {
    let (store, _dir) = temp_store().await;
    let shop = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
    let blog = store.insert_project(&new_project("blog"), at(0)).await.unwrap();
    store
        .insert_stage(shop.id, &new_stage("prod"), at(0))
        .await
        .unwrap();
    store
        .insert_stage(blog.id, &new_stage("prod"), at(0))
        .await
        .unwrap();
    let err = store
        .insert_stage(shop.id, &new_stage("prod"), at(0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { field: "name", .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_taken_hostname_is_a_conflict_naming_its_holder_and_nothing_is_written() {
    let (store, _dir) = temp_store().await;
    let shop = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
    let with_host = NewStage {
        hostname: Some(host("app.example.com")),
        ..new_stage("prod")
    };
    store.insert_stage(shop.id, &with_host, at(0)).await.unwrap();
    let clash = NewStage {
        hostname: Some(host("app.example.com")),
        ..new_stage("dev")
    };
    let err = store.insert_stage(shop.id, &clash, at(0)).await.unwrap_err();
    match err {
        StoreError::Conflict {
            field: "hostname",
            message,
        } => {
            assert_eq!(
                message,
                "hostname app.example.com is already used by stage shop/prod"
            );
        }
        other => panic!("expected a hostname conflict, got {other:?}"),
    }
    assert_eq!(
        store.list_stages(shop.id).await.unwrap().len(),
        1,
        "the stage was not half-created"
    );
}

#[tokio::test]
async fn of_concurrent_stages_claiming_one_hostname_exactly_one_wins() {
    let (store, _dir) = temp_store().await;
    let shop = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
    let attempts = (0..6).map(|i| {
        let store = store.clone();
        let new = NewStage {
            hostname: Some(host("race.example.com")),
            ..new_stage(&format!("s{i}"))
        };
        tokio::spawn(async move { store.insert_stage(shop.id, &new, at(0)).await })
    });
    let results: Vec<_> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(
        results.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(
            e,
            StoreError::Conflict {
                field: "hostname",
                ..
            }
        )),
        "{results:?}"
    );
    assert_eq!(store.list_stages(shop.id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn updating_a_hostname_moves_the_claim_and_clearing_it_releases_it() {
    let (store, _dir) = temp_store().await;
    let shop = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
    let prod = NewStage {
        hostname: Some(host("a.example.com")),
        ..new_stage("prod")
    };
    let prod = store.insert_stage(shop.id, &prod, at(0)).await.unwrap();
    let dev = NewStage {
        hostname: Some(host("b.example.com")),
        ..new_stage("dev")
    };
    let dev = store.insert_stage(shop.id, &dev, at(0)).await.unwrap();

    let clash = StagePatch {
        hostname: Some(Some(host("b.example.com"))),
        ..Default::default()
    };
    let err = store.update_stage(prod.id, &clash, at(1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                field: "hostname",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        store.hostname_owner("a.example.com").await.unwrap(),
        Some(("stage".into(), prod.id))
    );
    assert_eq!(
        store.get_stage(prod.id).await.unwrap().updated_at,
        at(0),
        "the failed update changed nothing"
    );

    let moved = StagePatch {
        hostname: Some(Some(host("c.example.com"))),
        ..Default::default()
    };
    let updated = store.update_stage(prod.id, &moved, at(2)).await.unwrap();
    assert_eq!(updated.hostname, Some(host("c.example.com")));
    assert_eq!(updated.updated_at, at(2));
    assert_eq!(store.hostname_owner("a.example.com").await.unwrap(), None);
    assert_eq!(
        store.hostname_owner("c.example.com").await.unwrap(),
        Some(("stage".into(), prod.id))
    );

    let cleared = StagePatch {
        hostname: Some(None),
        ..Default::default()
    };
    assert_eq!(
        store
            .update_stage(dev.id, &cleared, at(3))
            .await
            .unwrap()
            .hostname,
        None
    );
    assert_eq!(store.hostname_owner("b.example.com").await.unwrap(), None);
}

#[tokio::test]
async fn a_patch_leaves_unnamed_fields_alone() {
    let (store, _dir) = temp_store().await;
    let shop = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
    let new = NewStage {
        schedule: Some(Schedule::parse("@hourly").unwrap()),
        ..new_stage("prod")
    };
    let stage = store.insert_stage(shop.id, &new, at(0)).await.unwrap();
    let patch = StagePatch {
        auto_deploy: Some(false),
        max_instances: Some(2),
        ..Default::default()
    };
    let updated = store.update_stage(stage.id, &patch, at(1)).await.unwrap();
    assert_eq!((updated.auto_deploy, updated.max_instances), (false, 2));
    assert_eq!(updated.schedule, stage.schedule);
    assert_eq!(updated.container, stage.container);
    let renamed = StagePatch {
        name: Some(Name::parse("live").unwrap()),
        schedule: Some(None),
        ..Default::default()
    };
    let updated = store.update_stage(stage.id, &renamed, at(2)).await.unwrap();
    assert_eq!((updated.name.as_str(), updated.schedule.as_ref()), ("live", None));
    assert!(matches!(
        store.update_stage(999, &patch, at(1)).await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn a_project_with_stages_and_a_stage_with_instances_refuse_deletion() {
    let (store, _dir) = temp_store().await;
    let shop = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
    let new = NewStage {
        hostname: Some(host("shop.example.com")),
        ..new_stage("prod")
    };
    let stage = store.insert_stage(shop.id, &new, at(0)).await.unwrap();
    let err = store.delete_project(shop.id).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { field: "id", .. }), "{err:?}");

    let instance = store
        .insert_instance(&NewInstance {
            project_id: shop.id,
            stage_id: stage.id,
            image_tag: "v1".into(),
            image_digest: None,
            status: InstanceStatus::Running,
            hostname: None,
            created_at: at(0),
            config_revision: 1,
        })
        .await
        .unwrap();
    store
        .insert_deployment(
            stage.id,
            Some(instance.id),
            "v1",
            None,
            crate::domain::instance::Trigger::Poll,
            None,
            at(0),
        )
        .await
        .unwrap();
    let err = store.delete_stage(stage.id).await.unwrap_err();
    match err {
        StoreError::Conflict { field: "id", message } => {
            assert!(message.contains("instances"), "{message}")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }

    store.delete_instance(instance.id).await.unwrap();
    store.delete_stage(stage.id).await.unwrap();
    assert_eq!(store.hostname_owner("shop.example.com").await.unwrap(), None);
    assert!(
        store
            .list_deployments(Some(stage.id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.delete_stage(stage.id).await,
        Err(StoreError::NotFound)
    ));
    store.delete_project(shop.id).await.unwrap();
}

#[tokio::test]
async fn the_available_tag_is_recorded_and_updated_at_moves_only_on_change() {
    let (store, _dir) = temp_store().await;
    let shop = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
    let stage = store
        .insert_stage(shop.id, &new_stage("prod"), at(0))
        .await
        .unwrap();
    store
        .set_available_tag(stage.id, Some("v2"), Some("sha256:aa"), at(5))
        .await
        .unwrap();
    store
        .set_available_tag(stage.id, Some("v2"), Some("sha256:aa"), at(9))
        .await
        .unwrap();
    let read = store.get_stage(stage.id).await.unwrap();
    assert_eq!(
        (read.available_tag.as_deref(), read.updated_at),
        (Some("v2"), at(5))
    );
    store
        .set_available_tag(stage.id, None, None, at(10))
        .await
        .unwrap();
    assert_eq!(store.get_stage(stage.id).await.unwrap().available_tag, None);
    assert!(matches!(
        store.set_available_tag(999, None, None, at(0)).await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn only_an_instance_of_the_stage_can_become_its_current_one() {
    let (store, _dir) = temp_store().await;
    let shop = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
    let prod = store
        .insert_stage(shop.id, &new_stage("prod"), at(0))
        .await
        .unwrap();
    let dev = store
        .insert_stage(shop.id, &new_stage("dev"), at(0))
        .await
        .unwrap();
    let new = NewInstance {
        project_id: shop.id,
        stage_id: prod.id,
        image_tag: "v1".into(),
        image_digest: None,
        status: InstanceStatus::Pending,
        hostname: None,
        created_at: at(0),
        config_revision: 1,
    };
    let instance = store.insert_instance(&new).await.unwrap();
    assert!(matches!(
        store.set_current_instance(dev.id, Some(instance.id)).await,
        Err(StoreError::NotFound)
    ));
    store
        .set_current_instance(prod.id, Some(instance.id))
        .await
        .unwrap();
    assert_eq!(
        store.get_stage(prod.id).await.unwrap().current_instance_id,
        Some(instance.id)
    );
    store.set_current_instance(prod.id, None).await.unwrap();
    assert_eq!(store.get_stage(prod.id).await.unwrap().current_instance_id, None);
    assert!(matches!(
        store.set_current_instance(999, None).await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn a_change_of_the_spec_the_hooks_or_the_strategy_bumps_the_revision_and_others_do_not() {
    let (store, _dir) = temp_store().await;
    let project = store.insert_project(&new_project("shop"), at(0)).await.unwrap();
    let stage = store
        .insert_stage(project.id, &new_stage("prod"), at(0))
        .await
        .unwrap();
    assert_eq!(stage.config_revision, 1);
    let renamed = StagePatch {
        auto_deploy: Some(false),
        ..Default::default()
    };
    let stage = store.update_stage(stage.id, &renamed, at(1)).await.unwrap();
    assert_eq!(stage.config_revision, 1, "not what a container is made of");
    let hooks: Hooks = serde_json::from_str(r#"{"pre_deploy": {"command": ["migrate"]}}"#).unwrap();
    let hooked = StagePatch {
        hooks: Some(hooks.clone()),
        ..Default::default()
    };
    let stage = store.update_stage(stage.id, &hooked, at(2)).await.unwrap();
    assert_eq!((stage.config_revision, &stage.hooks), (2, &hooks));
    let stage = store.update_stage(stage.id, &hooked, at(3)).await.unwrap();
    assert_eq!(stage.config_revision, 2, "the same hooks again change nothing");
    let mut container = stage.container.clone();
    container.stop_grace_seconds = 30;
    let respec = StagePatch {
        container: Some(container),
        ..Default::default()
    };
    assert_eq!(
        store
            .update_stage(stage.id, &respec, at(4))
            .await
            .unwrap()
            .config_revision,
        3
    );
    let stop_first = StagePatch {
        strategy: Some(crate::domain::stage::DeployStrategy::StopFirst),
        ..Default::default()
    };
    let stage = store.update_stage(stage.id, &stop_first, at(5)).await.unwrap();
    assert_eq!(
        (stage.config_revision, stage.strategy),
        (4, crate::domain::stage::DeployStrategy::StopFirst),
        "a new strategy is a new configuration"
    );
    let stage = store.update_stage(stage.id, &stop_first, at(6)).await.unwrap();
    assert_eq!(
        stage.config_revision, 4,
        "the same strategy again changes nothing"
    );
}
