from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from sessiond_django.subjects import log_out_other_sessions, user_sessions


@login_required
def cart(request):
    """The cart lives in the session: sessiond keeps it across requests and app servers."""
    if request.method == "POST":
        item = request.POST.get("item", "").strip()[:64]
        if item:
            request.session["cart"] = request.session.get("cart", []) + [item]
        return redirect("cart")
    return render(request, "cart.html", {"cart": request.session.get("cart", [])})


@login_required
def devices(request):
    """The user's sessions, as sessiond lists them for the subject (ids and metadata, never tokens)."""
    sessions = user_sessions(request.user)
    for s in sessions:
        s["current"] = s["id"] == request.session.session_id
    return render(request, "devices.html", {"sessions": sessions})


@login_required
@require_POST
def log_out_others(request):
    revoked = log_out_other_sessions(request)
    messages.info(request, "Logged out %d other session%s." % (revoked, "" if revoked == 1 else "s"))
    return redirect("devices")
