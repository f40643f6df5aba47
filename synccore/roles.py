"""Which folder is the inbox, sent mail, trash...: RFC 6154 SPECIAL-USE flags win over names.

Names are the fallback for servers without SPECIAL-USE; the list covers the names common mail clients and
providers create in the languages most often seen.
"""

from __future__ import annotations

from collections.abc import Iterable

_SPECIAL_USE = {
    "\\SENT": "sent",
    "\\DRAFTS": "drafts",
    "\\TRASH": "trash",
    "\\JUNK": "junk",
    "\\ARCHIVE": "archive",
    "\\ALL": "all",
    "\\FLAGGED": "flagged",
    "\\IMPORTANT": "important",
}

_NAMES = {
    "sent": [
        "sent",
        "sent items",
        "sent mail",
        "sent messages",
        "gesendet",
        "gesendete elemente",
        "gesendete objekte",
        "envoyés",
        "éléments envoyés",
        "enviados",
        "elementos enviados",
        "inviati",
        "posta inviata",
        "verzonden",
        "verzonden items",
        "skickat",
        "skickade objekt",
        "отправленные",
        "wysłane",
        "送信済み",
        "已发送",
    ],
    "drafts": [
        "drafts",
        "draft",
        "entwürfe",
        "brouillons",
        "borradores",
        "bozze",
        "concepten",
        "utkast",
        "черновики",
        "kopie robocze",
        "下書き",
        "草稿",
    ],
    "trash": [
        "trash",
        "deleted",
        "deleted items",
        "deleted messages",
        "bin",
        "papierkorb",
        "gelöschte elemente",
        "corbeille",
        "éléments supprimés",
        "papelera",
        "elementos eliminados",
        "cestino",
        "prullenbak",
        "verwijderde items",
        "papperskorgen",
        "корзина",
        "удаленные",
        "kosz",
        "ゴミ箱",
        "已删除",
    ],
    "junk": [
        "junk",
        "spam",
        "junk e-mail",
        "junk email",
        "bulk mail",
        "courrier indésirable",
        "indésirables",
        "correo no deseado",
        "posta indesiderata",
        "ongewenste e-mail",
        "skräppost",
        "спам",
        "迷惑メール",
        "垃圾邮件",
    ],
    "archive": ["archive", "archives", "archiv", "archivo", "archivio", "archief", "arkiv", "архив"],
}
_BY_NAME = {name: role for role, names in _NAMES.items() for name in names}


def folder_role(name: str, flags: Iterable[str], delimiter: str | None = None) -> str | None:
    """The role of a folder: 'inbox', 'sent', 'drafts', 'trash', 'junk', 'archive', 'all', ... or None."""
    if name.upper() == "INBOX":
        return "inbox"
    for flag in flags:
        role = _SPECIAL_USE.get(flag.upper())
        if role:
            return role
    leaf = name.rsplit(delimiter, 1)[-1] if delimiter else name
    # "[Gmail]/Sent Mail" and "INBOX.Sent" are still the sent folder.
    return _BY_NAME.get(leaf.strip().lower())


def assign_roles(found: list[tuple[str, frozenset[str], str | None]]) -> dict[str, str | None]:
    """Roles for a whole listing: a role given by a flag is not given again by a name."""
    by_flag = {}
    for name, flags, delim in found:
        if any(f.upper() in _SPECIAL_USE for f in flags) or name.upper() == "INBOX":
            by_flag[name] = folder_role(name, flags, delim)
    taken = set(by_flag.values())
    roles: dict[str, str | None] = {}
    for name, _flags, delim in found:
        if name in by_flag:
            roles[name] = by_flag[name]
        else:
            role = folder_role(name, (), delim)
            roles[name] = role if role not in taken else None
            if role:
                taken.add(role)
    return roles
