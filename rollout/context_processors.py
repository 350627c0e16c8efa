from .roles import Role, user_roles


def roles(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"user_roles": frozenset()}
    names = user_roles(user)
    return {
        "user_roles": names,
        "user_role_labels": [r.label for r in Role if r.value in names],
    }
