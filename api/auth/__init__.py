"""Access control: tokens and roles, the per-route policy, privacy rules, audit.

See docs/access.md. Modules import only the kernel and each other, never
the routers; `guard.authorize` is the dependency the app installs globally.
"""
