//! The admin dashboard (`/dashboard`): operators sign in ([`login`], [`session`]), pick a
//! project and mode, and see its revenue, payment counts and 30-day chart ([`overview`],
//! [`chart`]), its customers with their payments, subscriptions and invoices
//! ([`customers`]), its webhook endpoints with their deliveries ([`webhooks`]), and its
//! settlements: expected from Cardstream against received at Griffin ([`settlements`]), and
//! the deployment's bank credits that matched no settlement.
//!
//! Every number and list comes from read models, with indexed queries scoped by project and
//! mode: the `dashboard` projection's daily totals and customer search, the `api` read
//! model's objects, the `api_keys` projects, the relay's delivery tables and the
//! `settlements` projection. No page reads
//! the event log. Pages are plain server-rendered HTML (no script), sent with the CSP
//! nonce, `Cache-Control: no-store` and a `Server-Timing` header with the time spent.

pub mod chart;
pub mod customers;
pub mod login;
pub mod overview;
pub mod session;
pub mod settlements;
pub mod webhooks;

use std::time::Instant;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{from_fn, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use sqlx::PgPool;

use self::session::Session;
use super::Page;
use crate::v1::read_model::Scope;

/// What the dashboard's handlers share.
#[derive(Clone)]
pub struct DashboardState {
    pub pool: PgPool,
    /// Cookies get `Secure` when browsers reach us over https.
    pub secure_cookies: bool,
}

impl DashboardState {
    pub fn new(pool: PgPool, public_url: &str) -> Self {
        Self {
            pool,
            secure_cookies: public_url.starts_with("https://"),
        }
    }
}

/// The dashboard's routes, with their state; merge into the app.
pub fn routes<S>(state: DashboardState) -> Router<S> {
    Router::new()
        .route("/dashboard", get(home))
        .route("/dashboard/login", get(login::form).post(login::submit))
        .route("/dashboard/logout", post(login::logout))
        .route("/dashboard/bank-credits", get(settlements::unexpected))
        .route("/dashboard/projects/{project}/{mode}", get(overview::page))
        .route(
            "/dashboard/projects/{project}/{mode}/customers",
            get(customers::list),
        )
        .route(
            "/dashboard/projects/{project}/{mode}/customers/{customer}",
            get(customers::page),
        )
        .route(
            "/dashboard/projects/{project}/{mode}/webhooks",
            get(webhooks::list),
        )
        .route(
            "/dashboard/projects/{project}/{mode}/webhooks/{endpoint}",
            get(webhooks::page),
        )
        .route(
            "/dashboard/projects/{project}/{mode}/settlements",
            get(settlements::list),
        )
        .layer(from_fn(server_timing))
        .with_state(state)
}

/// `Server-Timing: app;dur=<ms>`: the time from the dashboard's first layer to its
/// response, session lookup included (what the dashboard benchmark reads).
async fn server_timing(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut response = next.run(request).await;
    let milliseconds = started.elapsed().as_secs_f64() * 1_000.0;
    if let Ok(value) = HeaderValue::from_str(&format!("app;dur={milliseconds:.3}")) {
        response.headers_mut().insert("server-timing", value);
    }
    response
}

/// Most projects listed on the picker.
const MAX_PROJECTS: i64 = 500;

/// A project and mode being looked at.
#[derive(Debug, Clone)]
pub struct ProjectView {
    pub scope: Scope,
    pub name: String,
}

impl ProjectView {
    pub fn mode(&self) -> &'static str {
        if self.scope.livemode {
            "live"
        } else {
            "test"
        }
    }

    /// `/dashboard/projects/<project>/<mode>` and what follows.
    pub fn href(&self, rest: &str) -> String {
        format!(
            "/dashboard/projects/{}/{}{rest}",
            self.scope.project,
            self.mode()
        )
    }

    /// The project and mode of a dashboard path, if the project exists.
    pub async fn find(
        pool: &PgPool,
        page: &Page,
        project: &str,
        mode: &str,
    ) -> Result<ProjectView, Response> {
        let livemode = match mode {
            "test" => false,
            "live" => true,
            _ => return Err(not_found(page)),
        };
        let name: Option<String> =
            sqlx::query_scalar("SELECT name FROM api_keys.projects WHERE id = $1")
                .bind(project)
                .fetch_optional(pool)
                .await
                .map_err(|error| unavailable(page, error))?;
        match name {
            Some(name) => Ok(ProjectView {
                scope: Scope {
                    project: project.to_string(),
                    livemode,
                },
                name,
            }),
            None => Err(not_found(page)),
        }
    }
}

pub fn not_found(page: &Page) -> Response {
    page.message(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is nothing at this address.",
    )
}

pub fn unavailable(page: &Page, error: impl std::fmt::Display) -> Response {
    tracing::warn!(%error, "dashboard page failed");
    page.message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Dashboard unavailable",
        "The dashboard cannot be shown right now. Please try again in a moment.",
    )
}

/// The dashboard's own styles, after the pages' common ones (which are for narrow pages).
const STYLE: &str = "body{max-width:72rem}\
header.bar{display:flex;flex-wrap:wrap;gap:1rem;align-items:center;justify-content:space-between;border-bottom:1px solid #ccd;padding-bottom:.5rem}\
nav ul{list-style:none;display:flex;flex-wrap:wrap;gap:1rem;padding:0;margin:0}\
nav a[aria-current]{font-weight:bold}\
table{border-collapse:collapse;width:100%;margin:1rem 0}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #ddd;vertical-align:top}\
td.amount,th.amount{text-align:right;font-variant-numeric:tabular-nums}caption{text-align:left;font-weight:bold;padding:.3rem 0}\
.figures{display:flex;flex-wrap:wrap;gap:2rem}.figures div{min-width:10rem}.figures dd{font-size:1.6rem;margin:0}\
form.inline{display:inline}form.inline button{margin:0}\
label{display:block;margin-top:.8rem}input{font-size:1rem;padding:.4rem;width:100%;max-width:24rem}\
.error{color:#a00;font-weight:bold}.skip{position:absolute;left:-999px}.skip:focus{left:1rem}\
svg{max-width:100%;height:auto}code{word-break:break-all}";

/// Which part of a project's pages is showing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Projects,
    Overview,
    Customers,
    Webhooks,
    Settlements,
    BankCredits,
}

/// A signed-in page: the bar with navigation and sign-out, then `body`.
pub fn layout(
    page: &Page,
    session: &Session,
    title: &str,
    project: Option<&ProjectView>,
    section: Section,
    body: Markup,
) -> Markup {
    let current = |this: Section| (this == section).then_some("page");
    page.document(
        title,
        html! {
            style nonce=(page.nonce()) { (STYLE) }
            a class="skip" href="#content" { "Skip to content" }
            header class="bar" {
                nav aria-label="Dashboard" {
                    ul {
                        li { a href="/dashboard" aria-current=[current(Section::Projects)] { "Projects" } }
                        li { a href="/dashboard/bank-credits" aria-current=[current(Section::BankCredits)] { "Bank credits" } }
                        @if let Some(project) = project {
                            li { a href=(project.href("")) aria-current=[current(Section::Overview)] { "Overview" } }
                            li { a href=(project.href("/customers")) aria-current=[current(Section::Customers)] { "Customers" } }
                            li { a href=(project.href("/webhooks")) aria-current=[current(Section::Webhooks)] { "Webhooks" } }
                            li { a href=(project.href("/settlements")) aria-current=[current(Section::Settlements)] { "Settlements" } }
                        }
                    }
                }
                div {
                    span { "Signed in as " (session.display_name) " (" (session.email) ") " }
                    form class="inline" method="post" action="/dashboard/logout" {
                        input type="hidden" name="csrf_token" value=(session.csrf_token);
                        button type="submit" { "Sign out" }
                    }
                }
            }
            div id="content" {
                @if let Some(project) = project {
                    p class="note" {
                        (project.name) " · " code { (project.scope.project) } " · "
                        strong { (project.mode()) " mode" }
                        " · switch to "
                        @let other = if project.scope.livemode { "test" } else { "live" };
                        a href=(format!("/dashboard/projects/{}/{other}", project.scope.project)) { (other) " mode" }
                    }
                }
                (body)
            }
        },
    )
}

/// A Unix time as operators read it (UTC).
pub fn when(timestamp: i64) -> String {
    chrono::DateTime::from_timestamp(timestamp, 0)
        .map(|time| time.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// `GET /dashboard`: every project, each in test and live mode.
async fn home(State(state): State<DashboardState>, session: Session) -> Response {
    let page = Page::default();
    let projects: Vec<(String, String, i64)> = match sqlx::query_as(
        "SELECT id, name, created FROM api_keys.projects ORDER BY name, id LIMIT $1",
    )
    .bind(MAX_PROJECTS)
    .fetch_all(&state.pool)
    .await
    {
        Ok(projects) => projects,
        Err(error) => return unavailable(&page, error),
    };
    let body = html! {
        h1 { "Projects" }
        @if projects.is_empty() {
            p { "No projects yet. Create one with " code { "calmony projects create --name …" } "." }
        } @else {
            table {
                caption { "Every project (" (projects.len()) ")" }
                thead { tr { th scope="col" { "Project" } th scope="col" { "Id" } th scope="col" { "Created" } th scope="col" { "Open" } } }
                tbody {
                    @for (id, name, created) in &projects {
                        tr {
                            th scope="row" { (name) }
                            td { code { (id) } }
                            td { (when(*created)) }
                            td {
                                a href=(format!("/dashboard/projects/{id}/test")) { "Test mode" } " · "
                                a href=(format!("/dashboard/projects/{id}/live")) { "Live mode" }
                            }
                        }
                    }
                }
            }
        }
    };
    page.respond(
        StatusCode::OK,
        layout(&page, &session, "Projects", None, Section::Projects, body),
    )
}

/// Path parameters of a project's pages.
pub type ProjectPath = Path<(String, String)>;
