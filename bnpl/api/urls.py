from django.urls import path

from bnpl.api import payment_method, servicing_views, views

urlpatterns = [
    path("bnpl/quotes", views.QuoteApi.as_view(), name="bnpl-quotes"),
    path("bnpl/profile", servicing_views.BorrowerProfileApi.as_view(), name="bnpl-profile"),
    path("bnpl/plans", servicing_views.PlanListApi.as_view(), name="bnpl-plans"),
    path(
        "bnpl/plans/<int:plan_id>", servicing_views.PlanDetailApi.as_view(), name="bnpl-plan-detail"
    ),
    path(
        "bnpl/plans/<int:plan_id>/reschedule",
        servicing_views.PlanRescheduleApi.as_view(),
        name="bnpl-plan-reschedule",
    ),
    path(
        "bnpl/plans/<int:plan_id>/suggested-dates",
        servicing_views.PlanSuggestedDatesApi.as_view(),
        name="bnpl-plan-suggested-dates",
    ),
    path(
        "bnpl/plans/<int:plan_id>/installments/<int:number>/payments",
        servicing_views.InstallmentPaymentApi.as_view(),
        name="bnpl-installment-payments",
    ),
    path(
        "bnpl/plans/<int:plan_id>/payoff",
        servicing_views.PlanPayoffApi.as_view(),
        name="bnpl-plan-payoff",
    ),
    path(
        "bnpl/plans/<int:plan_id>/cancel",
        servicing_views.PlanCancelApi.as_view(),
        name="bnpl-plan-cancel",
    ),
    path(
        "bnpl/plans/<int:plan_id>/payment-method",
        payment_method.PlanPaymentMethodApi.as_view(),
        name="bnpl-plan-payment-method",
    ),
]
