// Sort a table by the clicked column (numbers by their first number, else text); filter rows with a search box.
function firstNumber(text) { const m = text.match(/-?\d+(\.\d+)?/); return m ? parseFloat(m[0]) : null; }
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      const body = table.tBodies[0];
      const rows = Array.from(body.rows);
      const ascending = !th.classList.contains("asc");
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(ascending ? "asc" : "desc");
      rows.sort(function (a, b) {
        const x = a.cells[column].textContent.trim(), y = b.cells[column].textContent.trim();
        const nx = firstNumber(x), ny = firstNumber(y);
        const order = (nx !== null && ny !== null) ? nx - ny : x.localeCompare(y);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
document.querySelectorAll("input.search").forEach(function (input) {
  const table = document.getElementById(input.dataset.table);
  input.addEventListener("input", function () {
    const needle = input.value.toLowerCase();
    Array.from(table.tBodies[0].rows).forEach(function (row) {
      row.style.display = row.textContent.toLowerCase().includes(needle) ? "" : "none";
    });
  });
});
