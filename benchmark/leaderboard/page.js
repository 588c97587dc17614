/* Sortable tables of the PCRB leaderboard page (benchmark/leaderboard_html.py).
   Click a column header to sort its table by that column; a second click reverses the order.
   Numeric columns sort by each cell's data-value; cells without one (-, failed) always sort
   last; ties keep the leaderboard's order (each row's data-index). */
(function () {
  "use strict";

  function key(row, column, numeric) {
    var cell = row.cells[column];
    if (!cell) {
      return null;
    }
    if (numeric) {
      var raw = cell.getAttribute("data-value");
      return raw === null || raw === "" ? null : Number(raw);
    }
    return cell.textContent.trim().toLowerCase();
  }

  function sortBy(th) {
    var table = th.closest("table");
    var body = table.tBodies[0];
    var column = th.cellIndex;
    var numeric = th.getAttribute("data-type") === "num";
    var first = th.getAttribute("data-first") === "desc" ? "descending" : "ascending";
    var order = th.getAttribute("aria-sort") === first ? (first === "ascending" ? "descending" : "ascending") : first;
    var sign = order === "ascending" ? 1 : -1;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, column, numeric);
      var y = key(b, column, numeric);
      if (x !== y) {
        if (x === null) {
          return 1;
        }
        if (y === null) {
          return -1;
        }
        if (x < y) {
          return -sign;
        }
        if (x > y) {
          return sign;
        }
      }
      return Number(a.getAttribute("data-index")) - Number(b.getAttribute("data-index"));
    });
    rows.forEach(function (row) {
      body.appendChild(row);
    });
    Array.prototype.forEach.call(th.parentNode.cells, function (cell) {
      cell.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", order);
  }

  Array.prototype.forEach.call(document.querySelectorAll("table.sortable th[data-type]"), function (th) {
    th.addEventListener("click", function () {
      sortBy(th);
    });
  });
})();
