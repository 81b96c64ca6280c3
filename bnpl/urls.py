from django.urls import path

from bnpl import views

urlpatterns = [
    path("", views.my_plans, name="my-plans"),
    path("<int:plan_id>/", views.plan_detail, name="my-plan"),
    path("<int:plan_id>/installments/<int:number>/pay", views.installment_pay, name="my-plan-pay"),
    path("<int:plan_id>/payoff/", views.plan_payoff, name="my-plan-payoff"),
]
