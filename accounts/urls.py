from django.urls import include, path

from accounts import views

urlpatterns = [
    path("settings/", views.settings_page, name="account_settings"),
    path("invite/<str:key>/", views.invitation, name="account_invitation"),
    path("", include("allauth.urls")),
]
