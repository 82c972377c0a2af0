"""The API's routers. A user id in a path may hold any character the contract allows.

CONTRACT §1 allows any 1-256 characters in a ``user_id``, so ``/`` and line breaks
too. Starlette's default ``{x}`` stops at ``/`` and its ``path`` convertor at a line
break; routes naming a user use ``{user_id:user_id}`` instead (send it percent-encoded).
"""

from __future__ import annotations

from starlette.convertors import CONVERTOR_TYPES, StringConvertor, register_url_convertor


class UserIdConvertor(StringConvertor):
    regex = r"[\s\S]+"  # any character; the route's fixed suffix ends it


if "user_id" not in CONVERTOR_TYPES:
    register_url_convertor("user_id", UserIdConvertor())
USER_PATH = "/users/{user_id:user_id}"
