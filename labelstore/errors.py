"""The one exception type a user of labelstore-kit ever needs to catch."""


class LabelStoreError(Exception):
    """Something the user can fix: the message says what is wrong and what to do."""
