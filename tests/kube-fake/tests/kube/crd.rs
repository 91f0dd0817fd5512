//! Custom resources exist only while a CRD registers them.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::discovery::Discovery;
use kube::{CustomResourceExt, ResourceExt};

use crate::common::{Widget, install_widget_crd, server, status, widget};

#[tokio::test]
async fn custom_resources_are_not_found_before_their_crd_and_served_after() {
    let (server, client) = server().await;
    let widgets: Api<Widget> = Api::default_namespaced(client.clone());
    let before = status(widgets.create(&PostParams::default(), &widget("w", 1)).await);
    assert_eq!((before.code, before.reason.as_str()), (404, "NotFound"));
    assert_eq!(status(widgets.list(&ListParams::default()).await).code, 404);
    assert!(server.objects("test.respawn.dev/v1", "Widget").is_empty());

    install_widget_crd(&client).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get(Widget::crd_name()).await.unwrap();
    let established = crd.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        established
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );

    let created = widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(widgets.list(&ListParams::default()).await.unwrap().items.len(), 1);
    assert_eq!(server.objects("test.respawn.dev/v1", "widgets").len(), 1);

    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    assert!(discovery.has_group("test.respawn.dev"));

    // Deleting the CRD deletes its objects and stops serving the resource.
    crds.delete(Widget::crd_name(), &DeleteParams::default()).await.unwrap();
    assert_eq!(status(widgets.get("w").await).code, 404);
    assert!(server.objects("test.respawn.dev/v1", "Widget").is_empty());
}

#[tokio::test]
async fn a_crd_whose_name_does_not_match_is_invalid() {
    let (_server, client) = server().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let mut crd = Widget::crd();
    crd.metadata.name = Some("wrong.test.respawn.dev".into());
    let invalid = status(crds.create(&PostParams::default(), &crd).await);
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
    assert!(
        crds.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .all(|c| c.name_any() != "wrong.test.respawn.dev")
    );
}
