"""Joining several ``data.features`` entries on ``data.join_key``.

The first entry is the driving table; each later one is joined to it in turn (``inner``: rows
whose key is in every source; ``left``: every row of the first source, nulls where a later one
has no match). SQL semantics: a null key matches nothing, and a key repeated on the right
repeats the row. The key column of each later source is cast to the first source's key type.

In one process the join is pyarrow's hash join. On Ray, a later source up to
``broadcast_max_bytes`` is gathered once and joined to every block of the driving dataset
(a broadcast join: no shuffle, the usual shape for a table of per-merchant features); a larger
one goes through ``Dataset.join``, a hash shuffle (Ray needs the ``polars`` package for it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import pyarrow as pa

if TYPE_CHECKING:
    import ray.data

JoinType = Literal["inner", "left"]
_ARROW_JOIN = {"inner": "inner", "left": "left outer"}
_RAY_JOIN = {"inner": "inner", "left": "left_outer"}


def align_key(table: pa.Table, key: str, dtype: pa.DataType) -> pa.Table:
    """``table`` with its key column cast to ``dtype``."""
    index = table.schema.get_field_index(key)
    if table.schema.field(index).type == dtype:
        return table
    return table.set_column(index, pa.field(key, dtype), table[key].cast(dtype))


def join_pair(left: pa.Table, right: pa.Table, key: str, how: JoinType) -> pa.Table:
    """One join step with pyarrow (the right key cast to the left key's type)."""
    right = align_key(right, key, left.schema.field(key).type)
    return left.join(right, keys=key, join_type=_ARROW_JOIN[how], coalesce_keys=True)


def join_tables(tables: list[pa.Table], key: str | None, how: JoinType) -> pa.Table:
    """Join the tables left to right on ``key`` (a single table is returned as it is)."""
    result = tables[0]
    for right in tables[1:]:
        assert key is not None
        result = join_pair(result, right, key, how)
    return result


def broadcast_join(batch: pa.Table, right: pa.Table, key: str, how: JoinType) -> pa.Table:
    """The map_batches function of a broadcast join: one block joined to the whole right side."""
    return join_pair(batch, right, key, how)


def join_datasets(datasets: list[ray.data.Dataset], key: str | None, how: JoinType, *,
                  key_type: pa.DataType, right_bytes: list[int], broadcast_max_bytes: int,
                  num_partitions: int = 16) -> ray.data.Dataset:
    """Join Ray Datasets left to right on ``key`` (of ``key_type`` in the first);
    ``right_bytes`` sizes each later source."""
    import ray

    result = datasets[0]
    for right, size in zip(datasets[1:], right_bytes, strict=True):
        assert key is not None
        if size <= broadcast_max_bytes:
            blocks = [b for b in ray.get(right.to_arrow_refs()) if b.num_rows] \
                or [right.schema().base_schema.empty_table()]
            table = pa.concat_tables(blocks, promote_options="permissive")
            # Ray's typing of map_batches has fn take only the batch (no fn_args/fn_kwargs)
            result = result.map_batches(broadcast_join,  # type: ignore[arg-type]
                                        batch_format="pyarrow", fn_args=(ray.put(table),),
                                        fn_kwargs={"key": key, "how": how})
        else:
            right = right.map_batches(align_key,  # type: ignore[arg-type]  # as above
                                      batch_format="pyarrow",
                                      fn_kwargs={"key": key, "dtype": key_type})
            result = result.join(right, join_type=_RAY_JOIN[how], num_partitions=num_partitions,
                                 on=(key,))
    return result
