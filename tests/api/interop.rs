//! A standard OAuth2 client library (the `oauth2` crate) works unchanged against the REST layer.
use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, ClientId, ClientSecret, IntrospectionUrl, RevocationUrl, Scope, StandardRevocableToken,
    TokenIntrospectionResponse, TokenResponse, TokenUrl,
};

use crate::helpers::{Db, Options, http_client, spawn_app_with};
use crate::on_both_dbs;

on_both_dbs!(oauth2_crate_client_credentials_introspection_revocation);

async fn oauth2_crate_client_credentials_introspection_revocation(db: Db) {
    // Over HTTPS: the oauth2 crate (rightly, RFC 7009 §2) refuses a plain-HTTP revocation endpoint.
    let app = spawn_app_with(db, Options { tls: true, ..Options::default() }).await;
    assert!(app.http.starts_with("https://"));
    let c = app.create_client("interop", "read write", &[]).await;
    let http: oauth2::reqwest::Client = http_client(app.ca_pem.as_deref());

    for auth in [AuthType::BasicAuth, AuthType::RequestBody] {
        let client = BasicClient::new(ClientId::new(c.id.clone()))
            .set_client_secret(ClientSecret::new(c.secret.clone()))
            .set_auth_type(auth.clone())
            .set_token_uri(TokenUrl::new(format!("{}/oauth2/token", app.http)).unwrap())
            .set_introspection_url(IntrospectionUrl::new(format!("{}/oauth2/introspect", app.http)).unwrap())
            .set_revocation_url(RevocationUrl::new(format!("{}/oauth2/revoke", app.http)).unwrap());

        let token = client
            .exchange_client_credentials()
            .add_scope(Scope::new("read".into()))
            .request_async(&http)
            .await
            .expect("client credentials via the oauth2 crate");
        assert_eq!(token.scopes().unwrap(), &vec![Scope::new("read".into())]);
        assert!(token.refresh_token().is_none());
        assert!(token.expires_in().unwrap().as_secs() > 0);

        let info = client.introspect(token.access_token()).request_async(&http).await.expect("introspection");
        assert!(info.active());
        assert_eq!(info.client_id().unwrap().as_str(), c.id);
        assert_eq!(info.sub(), Some(c.id.as_str()));

        let revocable: StandardRevocableToken = token.access_token().into();
        client.revoke_token(revocable).unwrap().request_async(&http).await.expect("revocation");
        let info = client.introspect(token.access_token()).request_async(&http).await.unwrap();
        assert!(!info.active(), "{auth:?}");

        let bad = BasicClient::new(ClientId::new(c.id.clone()))
            .set_client_secret(ClientSecret::new("wrong".into()))
            .set_auth_type(auth.clone())
            .set_token_uri(TokenUrl::new(format!("{}/oauth2/token", app.http)).unwrap());
        let err = bad.exchange_client_credentials().request_async(&http).await.unwrap_err();
        match err {
            oauth2::RequestTokenError::ServerResponse(r) => {
                assert_eq!(*r.error(), oauth2::basic::BasicErrorResponseType::InvalidClient)
            }
            other => panic!("expected a standard invalid_client error, got {other:?}"),
        }
    }
}
