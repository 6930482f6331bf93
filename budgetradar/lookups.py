"""Query lookups the ORM does not offer.

``field__in_array=values`` is ``field__in=values`` for long lists of plain values (the
engine's units of 10,000 ids): on PostgreSQL the values travel as one array parameter,
``field = ANY(%s::type[])``, instead of one ``%s`` each, so Django prepares, the driver
quotes and the server parses one parameter, not ten thousand. Elsewhere (SQLite) it is
the plain ``IN`` list. The rows matched are the same either way. It works on plain
fields and on single-column foreign keys (``entity_id__in_array``).
"""

from __future__ import annotations

from django.core.exceptions import EmptyResultSet
from django.db.models import Field, ForeignObject
from django.db.models.expressions import ColPairs
from django.db.models.fields.related_lookups import RelatedIn
from django.db.models.lookups import In


class ArrayParameter:
    """``as_postgresql`` of the ``in_array`` lookups: the values as one array parameter."""

    lookup_name = "in_array"

    def as_postgresql(self, compiler, connection) -> tuple[str, list]:
        if not self.rhs_is_direct_value() or isinstance(self.lhs, ColPairs):  # a subquery; a composite key
            return self.as_sql(compiler, connection)
        lhs, lhs_params = self.process_lhs(compiler, connection)
        field = self.lhs.output_field
        # The values went through the field's get_prep_value when the lookup was built.
        values = [
            field.get_db_prep_value(v, connection, prepared=True) for v in dict.fromkeys(self.rhs) if v is not None
        ]
        if not values:
            raise EmptyResultSet
        db_type = field.db_type(connection)
        if db_type and all(type(v) is int for v in values):
            # Ids as one array literal: the driver would otherwise dump and quote each one.
            return f"{lhs} = ANY(%s::{db_type}[])", [*lhs_params, "{" + ",".join(map(str, values)) + "}"]
        cast = f"::{db_type}[]" if db_type else ""
        return f"{lhs} = ANY(%s{cast})", [*lhs_params, values]


@Field.register_lookup
class InArray(ArrayParameter, In):
    pass


@ForeignObject.register_lookup
class RelatedInArray(ArrayParameter, RelatedIn):
    pass
