/* The consumer portal's one script: copy buttons. Pages work without it. */
"use strict";

document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) {
    return;
  }
  const source = document.getElementById(button.dataset.copy);
  if (!source || !navigator.clipboard) {
    return;
  }
  navigator.clipboard.writeText(source.textContent.trim()).then(
    () => {
      const label = button.textContent;
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = label; }, 1500);
    },
    () => { button.textContent = "Select and copy"; },
  );
});
