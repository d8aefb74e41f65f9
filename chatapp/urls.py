from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from billing import views as usage_views
from chatapp.health import healthz
from chatapp.socketcheck import socket_check
from ops import views as metrics_views
from threads import api, share, token_api, tree_api, tree_views, views

handler400 = "chatapp.errors.bad_request"
handler404 = "chatapp.errors.page_not_found"
handler500 = "chatapp.errors.server_error"

urlpatterns = [
    path("", views.thread_list_page, name="thread-list"),
    path("threads/<int:thread_id>/", views.thread_page, name="thread"),
    path("threads/<int:thread_id>/delete", views.thread_delete_page, name="thread-delete"),
    path("settings/chat/", views.chat_settings_page, name="chat-settings"),
    path("threads/<int:thread_id>/archive", tree_views.thread_archive_page, name="thread-archive"),
    path("accounts/", include("accounts.urls")),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("api/threads", api.threads_collection),
    path("api/threads/cancel/<str:request_id>", api.cancel),
    path("api/threads/<int:thread_id>", api.thread_item),
    path("api/threads/<int:thread_id>/messages", api.thread_messages),
    path("api/models", api.models_collection),
    path("api/tokens", token_api.tokens_collection),
    path("api/tokens/<str:token_id>", token_api.token_item),
    path("api/threads/<int:thread_id>/messages/<int:message_id>/regenerate", tree_api.regenerate_message),
    path("api/threads/<int:thread_id>/export", tree_api.thread_export),
    path("api/threads/import", tree_api.thread_import),
    path("api/threads/<int:thread_id>/share", tree_api.thread_share),
    path("threads/<int:thread_id>/share", tree_views.thread_share_page, name="thread-share"),
    path("s/<str:token>", share.share_page, name="share"),
    path("threads/import", tree_views.thread_import_page, name="thread-import"),
    # Metrics summary and the staff dashboard (ops/views.py).
    path("api/metrics", metrics_views.api_metrics, name="api-metrics"),
    path("staff/dashboard/", metrics_views.dashboard, name="staff-dashboard"),
    # Prometheus text for the same callers as /api/metrics (django_prometheus.urls would answer anyone).
    path("metrics", metrics_views.prometheus_metrics, name="prometheus-django-metrics"),
    # Why the page's WebSocket would be refused (chatapp/socketcheck.py), asked after a failed handshake.
    path("api/socket-check", socket_check, name="socket-check"),
    # Usage and budgets (billing/views.py).
    path("api/usage", usage_views.api_usage, name="api-usage"),
    path("usage/", usage_views.usage_page, name="usage"),
    path("favicon.ico", RedirectView.as_view(url="/static/favicon.svg", permanent=True)),
]
