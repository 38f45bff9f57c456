//! gRPC surface: AdminService authorization, health, reflection (v1 and v1alpha), error codes.
use tessera::grpc::pb;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::helpers::{Db, TestClient, spawn_app, with_basic};
use crate::on_both_dbs;

on_both_dbs!(admin_service_requires_admin_capability);

async fn admin_service_requires_admin_capability(db: Db) {
    let app = spawn_app(db).await;
    let plain = app.create_client("plain", "x", &[]).await;
    let admin = app.create_client("ops", "", &["admin"]).await;
    let mut api = app.grpc_admin().await;

    let req = pb::CreateClientRequest { name: "n".into(), scopes: vec!["a b".into()], ..Default::default() };
    let err = api.create_client(with_basic(req.clone(), &plain.id, &plain.secret)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = api.create_client(tonic::Request::new(req.clone())).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let created = api.create_client(with_basic(req, &admin.id, &admin.secret)).await.unwrap().into_inner();
    let client = created.client.unwrap();
    assert_eq!(client.scopes, vec!["a", "b"]);
    let partner = TestClient { id: client.client_id.clone(), secret: created.client_secret };
    // Usable at once on this replica.
    assert_eq!(app.grpc_token(&partner, &["a"]).await.unwrap().scope, vec!["a"]);

    let got = api
        .get_client(with_basic(pb::GetClientRequest { client_id: client.client_id.clone() }, &admin.id, &admin.secret))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.name, "n");
    let err = api
        .get_client(with_basic(pb::GetClientRequest { client_id: "cl_nope".into() }, &admin.id, &admin.secret))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = api
        .get_client(with_basic(pb::GetClientRequest { client_id: "bad id!".into() }, &admin.id, &admin.secret))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let rotated = api
        .rotate_client_secret(with_basic(
            pb::RotateClientSecretRequest { client_id: client.client_id.clone() },
            &admin.id,
            &admin.secret,
        ))
        .await
        .unwrap()
        .into_inner();
    let second = TestClient { id: client.client_id.clone(), secret: rotated.client_secret };
    assert!(app.grpc_token(&second, &[]).await.is_ok());
    assert!(app.grpc_token(&partner, &[]).await.is_ok(), "old secret valid until removed");

    let listed = api
        .list_clients(with_basic(pb::ListClientsRequest::default(), &admin.id, &admin.secret))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.clients.len(), 3);

    api.disable_client(with_basic(
        pb::DisableClientRequest { client_id: client.client_id.clone() },
        &admin.id,
        &admin.secret,
    ))
    .await
    .unwrap();
    assert_eq!(app.grpc_token(&partner, &[]).await.unwrap_err().code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn health_and_reflection() {
    let app = spawn_app(Db::Sqlite).await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr)).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "tessera.v1.TokenService", "tessera.v1.AdminService"] {
        let resp = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(resp.status(), ServingStatus::Serving, "{service:?}");
    }

    use tokio_stream::StreamExt;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut refl = ServerReflectionClient::new(channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let resp = stream.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection reply")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"tessera.v1.TokenService") && names.contains(&"tessera.v1.AdminService"), "{names:?}");

    use tonic_reflection::pb::v1alpha as alpha;
    let mut refl = alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let req = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "tessera.v1.TokenService".into(),
        )),
    };
    let mut stream = refl.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let resp = stream.next().await.unwrap().unwrap();
    assert!(matches!(
        resp.message_response,
        Some(alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
}

#[tokio::test]
async fn grpc_bad_input() {
    let app = spawn_app(Db::Sqlite).await;
    let c = app.create_client("c", "x", &[]).await;
    let mut grpc = app.grpc().await;
    // Malformed authorization metadata.
    for bad in ["Basic !!!", "Bearer", "Basic Zm9v", "basic"] {
        let mut req = tonic::Request::new(pb::IssueTokenRequest::default());
        req.metadata_mut().insert("authorization", bad.parse().unwrap());
        assert_eq!(grpc.issue_token(req).await.unwrap_err().code(), tonic::Code::Unauthenticated, "{bad}");
    }
    // Missing token.
    let err = grpc.introspect(with_basic(pb::IntrospectRequest::default(), &c.id, &c.secret)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // Malformed scope.
    let err = app.grpc_token(&c, &["bad\"scope"]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // Oversized message: RESOURCE_EXHAUSTED, as gRPC's status code table has it for a message over
    // the configured limit (tonic itself says OUT_OF_RANGE).
    let huge = pb::IntrospectRequest { token: "x".repeat(200 * 1024), token_type_hint: String::new() };
    let err = grpc.introspect(with_basic(huge, &c.id, &c.secret)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    // ExchangeForUser with neither subject nor subject_token.
    let err =
        grpc.exchange_for_user(with_basic(pb::ExchangeForUserRequest::default(), &c.id, &c.secret)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}
