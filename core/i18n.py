"""The i18n catalog: every user-visible text in Russian and English, with named placeholders.

Contract: a deposit or withdrawal id is written #<id> and `#` marks nothing else;
amounts are plain decimals followed by the token symbol. Texts are plain (no
parse_mode), so user-supplied values can never break markup.
"""
LANGUAGES = ("en", "ru")

CATALOG = {
    # --- general
    "welcome": {
        "en": "Welcome! Here you can deposit {symbol}, see your balance and withdraw.\nChoose an action:",
        "ru": "Добро пожаловать! Здесь можно пополнить баланс в {symbol}, посмотреть его и вывести средства.\nВыберите действие:",
    },
    "help": {
        "en": ("Commands:\n/start - main menu\n/deposit [amount] - deposit\n/balance - balance\n"
               "/withdraw [all|amount] [address] - withdraw\n/history - last operations\n"
               "/wallet [address] [signature] - bind your wallet (you sign a text to prove it is yours)\n"
               "/canceldeposit <id> - cancel an open deposit request\n"
               "/cancelwithdrawal <id> - cancel a withdrawal waiting for approval\n"
               "/lang [ru|en] - language\n/cancel - leave a dialog\n/help - this list"),
        "ru": ("Команды:\n/start - главное меню\n/deposit [сумма] - пополнить\n/balance - баланс\n"
               "/withdraw [all|сумма] [адрес] - вывести\n/history - последние операции\n"
               "/wallet [адрес] [подпись] - привязать кошелёк (вы подписываете текст, чтобы подтвердить владение)\n"
               "/canceldeposit <id> - отменить открытую заявку на пополнение\n"
               "/cancelwithdrawal <id> - отменить вывод, ожидающий одобрения\n"
               "/lang [ru|en] - язык\n/cancel - выйти из диалога\n/help - этот список"),
    },
    "help_support": {"en": "Questions? Write to {contact}.", "ru": "Вопросы? Пишите: {contact}."},
    "admin_help": {
        "en": ("Admin commands:\n"
               "/pending - withdrawals waiting for approval, with Approve / Reject buttons\n"
               "/approve <id> - approve a withdrawal; the worker sends it on chain\n"
               "/reject <id> [reason] - reject a withdrawal and refund its amount and fee to the user once\n"
               "/ban <user_id> [reason] - refuse every message of a user from now on\n"
               "/unban <user_id> - lift a ban: the user is served again\n"
               "/levels - the current deposit levels\n"
               "/setlevels 10-100,100-1000,1000-10000 - new deposit levels (contiguous; each upper bound "
               "belongs to the next level, the last one's to itself)\n"
               "/settings - the settings you can change, with their values\n"
               "/set <key> <value> - change one: min_withdrawal (tokens), withdrawal_fee (tokens), "
               "support_contact (text)\n"
               "/stats - users, balances, deposits and withdrawals by status\n"
               "/status - dependencies, maintenance, queues and the hot wallet, as dr.py status shows them\n"
               "/unattributed - transfers from addresses nobody had proven, to credit by hand\n"
               "/assign <deposit_id> <user_id> - credit an unattributed transfer to a user, once"),
        "ru": ("Команды администратора:\n"
               "/pending - выводы, ожидающие одобрения, с кнопками «Одобрить» / «Отклонить»\n"
               "/approve <id> - одобрить вывод; воркер отправит его в сеть\n"
               "/reject <id> [причина] - отклонить вывод и один раз вернуть пользователю сумму и комиссию\n"
               "/ban <user_id> [причина] - отклонять все сообщения пользователя\n"
               "/unban <user_id> - снять блокировку\n"
               "/levels - текущие уровни пополнения\n"
               "/setlevels 10-100,100-1000,1000-10000 - новые уровни пополнения (без разрывов; верхняя "
               "граница относится к следующему уровню, у последнего - к нему самому)\n"
               "/settings - изменяемые настройки и их значения\n"
               "/set <ключ> <значение> - изменить одну: min_withdrawal (токены), withdrawal_fee (токены), "
               "support_contact (текст)\n"
               "/stats - пользователи, балансы, пополнения и выводы по статусам\n"
               "/status - зависимости, обслуживание, очереди и горячий кошелёк, как в dr.py status\n"
               "/unattributed - переводы с адресов, которые никто не подтвердил, для ручного зачисления\n"
               "/assign <deposit_id> <user_id> - зачислить такой перевод пользователю, один раз"),
    },
    "unknown_command": {
        "en": "Unknown command. Send /help for the list of commands.",
        "ru": "Неизвестная команда. Отправьте /help, чтобы увидеть список команд.",
    },
    "free_text": {
        "en": "I did not understand that. Use the menu or send /help.",
        "ru": "Не понимаю. Воспользуйтесь меню или отправьте /help.",
    },
    "text_only": {
        "en": "I understand only text messages and commands. Send /help.",
        "ru": "Я понимаю только текстовые сообщения и команды. Отправьте /help.",
    },
    "too_long": {
        "en": "That message is too long.",
        "ru": "Сообщение слишком длинное.",
    },
    "cancelled": {"en": "Cancelled.", "ru": "Отменено."},
    "nothing_to_cancel": {"en": "There is nothing to cancel.", "ru": "Нечего отменять."},
    "stale_button": {
        "en": "This button is no longer valid.",
        "ru": "Эта кнопка больше не действует.",
    },
    "banned": {"en": "Access restricted.", "ru": "Доступ ограничен."},
    "slow_down": {
        "en": "Too many requests. Please slow down and try again in a few seconds.",
        "ru": "Слишком много запросов. Подождите несколько секунд и попробуйте снова.",
    },
    "db_operational": {
        "en": "Technical works on the server, please try again later.",
        "ru": "На сервере ведутся технические работы, попробуйте позже.",
    },
    "db_interface": {
        "en": "Problems connecting to the database, please try again later.",
        "ru": "Проблемы с подключением к базе данных, попробуйте позже.",
    },
    "db_error": {
        "en": "Database error, please try again later.",
        "ru": "Ошибка базы данных, попробуйте позже.",
    },
    "internal_error": {
        "en": "Something went wrong on our side. Nothing was changed; please try again.",
        "ru": "Что-то пошло не так. Ничего не изменено, попробуйте ещё раз.",
    },
    # --- buttons
    "btn_deposit": {"en": "Deposit", "ru": "Пополнить"},
    "btn_balance": {"en": "Balance", "ru": "Баланс"},
    "btn_withdraw": {"en": "Withdraw", "ru": "Вывести"},
    "btn_history": {"en": "History", "ru": "История"},
    "btn_wallet": {"en": "Wallet", "ru": "Кошелёк"},
    "btn_language": {"en": "Language", "ru": "Язык"},
    "btn_confirm": {"en": "Confirm", "ru": "Подтвердить"},
    "btn_cancel": {"en": "Cancel", "ru": "Отмена"},
    "btn_all": {"en": "All", "ru": "Всё"},
    "btn_approve": {"en": "Approve #{id}", "ru": "Одобрить #{id}"},
    "btn_reject": {"en": "Reject #{id}", "ru": "Отклонить #{id}"},
    "btn_level": {"en": "Level {level}: {low}-{high} {symbol}", "ru": "Уровень {level}: {low}-{high} {symbol}"},
    # --- language
    "choose_language": {"en": "Choose a language:", "ru": "Выберите язык:"},
    "language_set": {"en": "Language: English.", "ru": "Язык: русский."},
    "bad_language": {"en": "Unknown language. Use /lang ru or /lang en.", "ru": "Неизвестный язык. Используйте /lang ru или /lang en."},
    # --- wallet
    "wallet_current": {"en": "Your wallet: {address}", "ru": "Ваш кошелёк: {address}"},
    "wallet_none": {"en": "No wallet is bound yet.", "ru": "Кошелёк ещё не привязан."},
    "wallet_ask": {
        "en": "Send the address of your EVM wallet (0x followed by 40 hex digits). /cancel to stop.",
        "ru": "Отправьте адрес вашего EVM-кошелька (0x и 40 шестнадцатеричных цифр). /cancel - отмена.",
    },
    "wallet_bound": {"en": "Wallet bound: {address}", "ru": "Кошелёк привязан: {address}"},
    "wallet_sign": {
        "en": ("To prove that {address} is yours, sign the next message with that wallet, exactly as written "
               "(in any wallet: \"Sign message\", personal_sign). Then send the signature here: 0x followed by "
               "130 hex digits. /cancel to stop."),
        "ru": ("Чтобы подтвердить, что {address} принадлежит вам, подпишите следующее сообщение этим кошельком "
               "точно как оно написано (в любом кошельке: \"Подписать сообщение\", personal_sign). Затем отправьте "
               "подпись сюда: 0x и 130 шестнадцатеричных цифр. /cancel - отмена."),
    },
    "wallet_signature_malformed": {
        "en": "That is not a signature: it must be 0x followed by 130 hex digits. Nothing was bound.",
        "ru": "Это не подпись: нужно 0x и 130 шестнадцатеричных цифр. Ничего не привязано.",
    },
    "wallet_signature_wrong": {
        "en": ("This signature was not made by {address} over the text sent above. Nothing was bound. "
               "Sign that exact text with the wallet {address} and send the signature again."),
        "ru": ("Эта подпись сделана не кошельком {address} или не для присланного выше текста. Ничего не привязано. "
               "Подпишите именно этот текст кошельком {address} и отправьте подпись снова."),
    },
    "wallet_binding_paused": {
        "en": ("The blockchain is under maintenance or unreachable, so wallets cannot be bound right now. "
               "Nothing was bound; send the signature again later."),
        "ru": ("Блокчейн на обслуживании или недоступен, поэтому привязать кошелёк сейчас нельзя. "
               "Ничего не привязано; отправьте подпись позже."),
    },
    "wallet_rebind_blocked": {
        "en": ("Your wallet cannot change while money is on its way: {items}. Cancel an open deposit request with "
               "/canceldeposit <id> or a withdrawal waiting for approval with /cancelwithdrawal <id>, "
               "or wait until they finish."),
        "ru": ("Кошелёк нельзя сменить, пока есть незавершённые операции: {items}. Отмените заявку на пополнение "
               "командой /canceldeposit <id> или вывод, ожидающий одобрения, командой /cancelwithdrawal <id>, "
               "либо дождитесь их завершения."),
    },
    "wallet_blocker_deposit": {"en": "deposit request #{id}", "ru": "заявка на пополнение #{id}"},
    "wallet_blocker_withdrawal": {"en": "withdrawal #{id}", "ru": "вывод #{id}"},
    "wallet_earlier_transfers": {
        "en": ("Transfers from this wallet that were made before you proved it wait for an admin to check them: "
               "{items}."),
        "ru": ("Переводы с этого кошелька, сделанные до подтверждения, ждут проверки администратором: {items}."),
    },
    "wallet_earlier_item": {"en": "#{id} {amount} {symbol}", "ru": "#{id} {amount} {symbol}"},
    "wallet_invalid": {
        "en": "That is not a valid address: {reason}. Send 0x followed by 40 hex digits.",
        "ru": "Это не корректный адрес: {reason}. Отправьте 0x и 40 шестнадцатеричных цифр.",
    },
    "wallet_taken": {
        "en": "This address is bound to another user.",
        "ru": "Этот адрес привязан к другому пользователю.",
    },
    "wallet_forbidden": {
        "en": "This address cannot be used as your wallet.",
        "ru": "Этот адрес нельзя использовать как ваш кошелёк.",
    },
    "wallet_needed": {
        "en": "Bind your wallet first: /wallet <address>. Deposits are recognised by the address they come from.",
        "ru": "Сначала привяжите кошелёк: /wallet <адрес>. Пополнения распознаются по адресу отправителя.",
    },
    # --- deposit
    "deposit_choose_level": {
        "en": "Choose a deposit level, or send the amount:",
        "ru": "Выберите уровень пополнения или отправьте сумму:",
    },
    "deposit_ask_amount": {
        "en": "Send the amount to deposit, from {low} to {high} {symbol}. /cancel to stop.",
        "ru": "Отправьте сумму пополнения, от {low} до {high} {symbol}. /cancel - отмена.",
    },
    "deposit_ask_amount_below": {
        "en": "Send the amount to deposit, from {low} up to (not including) {high} {symbol}. /cancel to stop.",
        "ru": "Отправьте сумму пополнения, от {low} и меньше {high} {symbol}. /cancel - отмена.",
    },
    "deposit_out_of_levels": {
        "en": "The amount must lie within a deposit level: {levels}.",
        "ru": "Сумма должна попадать в один из уровней: {levels}.",
    },
    "deposit_created": {
        "en": ("Deposit request #{id}: send exactly {amount} {symbol} from your wallet {wallet} to\n{address}\n"
               "within {hours} h. It is credited after the network confirms it."),
        "ru": ("Заявка на пополнение #{id}: отправьте ровно {amount} {symbol} с вашего кошелька {wallet} на адрес\n"
               "{address}\nв течение {hours} ч. Зачисление - после подтверждения в сети."),
    },
    "deposit_maintenance": {
        "en": "The blockchain network is under maintenance: your deposit will be processed as soon as it is over.",
        "ru": "В сети блокчейна ведутся технические работы: пополнение будет обработано сразу после их окончания.",
    },
    "no_levels": {"en": "Deposits are not available right now.", "ru": "Пополнения сейчас недоступны."},
    # --- amounts
    "bad_amount": {
        "en": "Invalid amount: {reason}. Example: 12.5",
        "ru": "Неверная сумма: {reason}. Пример: 12.5",
    },
    # --- balance / history
    "balance_cached": {
        "en": ("Balance: {amount} {symbol} as of {time}. Technical works on the server: operations since then "
               "are not shown yet."),
        "ru": ("Баланс: {amount} {symbol} на {time}. На сервере ведутся технические работы: операции после "
               "этого времени пока не видны."),
    },
    "balance": {"en": "Balance: {amount} {symbol}", "ru": "Баланс: {amount} {symbol}"},
    "balance_pending_deposits": {"en": "Pending deposit requests:", "ru": "Ожидающие пополнения:"},
    "balance_withdrawals": {"en": "Withdrawals in progress:", "ru": "Выводы в обработке:"},
    "line_deposit": {"en": "#{id} deposit {amount} {symbol} - {status}", "ru": "#{id} пополнение {amount} {symbol} - {status}"},
    "line_withdrawal": {
        "en": "#{id} withdrawal {amount} {symbol} (fee {fee}) - {status}",
        "ru": "#{id} вывод {amount} {symbol} (комиссия {fee}) - {status}",
    },
    "history_title": {"en": "Last operations:", "ru": "Последние операции:"},
    "history_empty": {"en": "No operations yet.", "ru": "Операций пока нет."},
    # --- withdraw
    "withdraw_ask_amount": {
        "en": "Balance: {balance} {symbol}. Send the amount to withdraw (fee {fee} {symbol}), or press All. /cancel to stop.",
        "ru": "Баланс: {balance} {symbol}. Отправьте сумму вывода (комиссия {fee} {symbol}) или нажмите «Всё». /cancel - отмена.",
    },
    "withdraw_ask_address": {
        "en": "Send the address to withdraw to, or bind a wallet with /wallet. /cancel to stop.",
        "ru": "Отправьте адрес для вывода или привяжите кошелёк командой /wallet. /cancel - отмена.",
    },
    "withdraw_preview": {
        "en": "Withdraw {amount} {symbol} to {address}\nFee: {fee} {symbol}\nTotal debited: {total} {symbol}\nConfirm?",
        "ru": "Вывод {amount} {symbol} на {address}\nКомиссия: {fee} {symbol}\nВсего списывается: {total} {symbol}\nПодтвердить?",
    },
    "withdraw_created": {
        "en": "Withdrawal #{id}: {amount} {symbol} to {address}. Status: {status}.",
        "ru": "Вывод #{id}: {amount} {symbol} на {address}. Статус: {status}.",
    },
    "withdraw_below_min": {
        "en": "The minimum withdrawal is {min} {symbol}.",
        "ru": "Минимальная сумма вывода: {min} {symbol}.",
    },
    "withdraw_insufficient": {
        "en": "Not enough funds: balance {balance} {symbol}, needed {total} {symbol} including the fee.",
        "ru": "Недостаточно средств: баланс {balance} {symbol}, нужно {total} {symbol} с комиссией.",
    },
    "withdraw_terms_changed": {
        "en": "The fee or your balance changed since the preview. Please start again with /withdraw.",
        "ru": "Комиссия или баланс изменились. Начните заново: /withdraw.",
    },
    "withdraw_bad_address": {
        "en": "You cannot withdraw to this address.",
        "ru": "На этот адрес вывести нельзя.",
    },
    "withdraw_unavailable": {
        "en": "Withdrawals are temporarily unavailable. Your balance is safe; please try again later.",
        "ru": "Вывод временно недоступен. Ваш баланс в безопасности, попробуйте позже.",
    },
    "usage_cancel": {
        "en": "Usage: /canceldeposit <id> or /cancelwithdrawal <id>",
        "ru": "Использование: /canceldeposit <id> или /cancelwithdrawal <id>",
    },
    "deposit_cancelled": {"en": "Deposit request #{id} cancelled.", "ru": "Заявка на пополнение #{id} отменена."},
    "deposit_cancel_none": {
        "en": "You have no open deposit request #{id}.",
        "ru": "У вас нет открытой заявки на пополнение #{id}.",
    },
    "withdraw_cancelled": {
        "en": "Withdrawal #{id} cancelled. {total} {symbol} returned to your balance.",
        "ru": "Вывод #{id} отменён. {total} {symbol} возвращены на баланс.",
    },
    "withdraw_cancel_refused": {
        "en": "Withdrawal #{id} can no longer be cancelled: it is {status}.",
        "ru": "Вывод #{id} уже нельзя отменить: статус - {status}.",
    },
    "withdraw_cancel_none": {"en": "You have no withdrawal #{id}.", "ru": "У вас нет вывода #{id}."},
    "usage_withdraw": {
        "en": "Usage: /withdraw [all|amount] [address]",
        "ru": "Использование: /withdraw [all|сумма] [адрес]",
    },
    # --- notifications to users
    "notify_withdrawal_approved": {
        "en": "Withdrawal #{id} of {amount} {symbol} was approved and will be sent shortly.",
        "ru": "Вывод #{id} на {amount} {symbol} одобрен и скоро будет отправлен.",
    },
    "notify_withdrawal_rejected": {
        "en": "Withdrawal #{id} of {amount} {symbol} was rejected: {reason}. {total} {symbol} returned to your balance.",
        "ru": "Вывод #{id} на {amount} {symbol} отклонён: {reason}. {total} {symbol} возвращены на баланс.",
    },
    "notify_deposit_credited": {
        "en": "Deposit #{id} credited: {amount} {symbol}. Balance: {balance} {symbol}.",
        "ru": "Пополнение #{id} зачислено: {amount} {symbol}. Баланс: {balance} {symbol}.",
    },
    "notify_withdrawal_confirmed": {
        "en": "Withdrawal #{id} of {amount} {symbol} is confirmed on chain. Transaction: {tx_hash}",
        "ru": "Вывод #{id} на {amount} {symbol} подтверждён в сети. Транзакция: {tx_hash}",
    },
    "notify_withdrawal_failed": {
        "en": "Withdrawal #{id} of {amount} {symbol} failed on chain; {total} {symbol} returned to your balance.",
        "ru": "Вывод #{id} на {amount} {symbol} не прошёл в сети; {total} {symbol} возвращены на баланс.",
    },
    "admin_withdrawal_failed": {
        "en": "Withdrawal #{id} failed on chain ({reason}; tx {tx_hash}) and was refunded to user {user_id}.",
        "ru": "Вывод #{id} не прошёл в сети ({reason}; транзакция {tx_hash}), средства возвращены пользователю {user_id}.",
    },
    "admin_dependency_down": {
        "en": ("{name} is down ({error}, seen by the {process}). Users get the technical-works reply or a "
               "fallback; queued work completes when it is back."),
        "ru": ("{name}: недоступно ({error}, заметил {process}). Пользователи получают ответ о технических "
               "работах или резервный ответ; отложенное завершится после восстановления."),
    },
    "admin_dependency_back": {
        "en": "{name} answers again (seen by the {process}).",
        "ru": "{name}: снова отвечает (заметил {process}).",
    },
    "admin_withdrawal_problem": {
        "en": "Withdrawal #{id} (nonce {nonce}) needs attention: {problem}",
        "ru": "Вывод #{id} (nonce {nonce}) требует внимания: {problem}",
    },
    "admin_withdrawal_released": {
        "en": ("Withdrawal #{id} could not be mined: its nonce {nonce} was freed by cancel {tx_hash}. It is "
               "APPROVED again, its amount still held, and will be sent again in {seconds} s "
               "(/reject {id} refunds it instead)."),
        "ru": ("Вывод #{id} не удалось провести: его nonce {nonce} освобождён отменой {tx_hash}. Он снова "
               "APPROVED, сумма по-прежнему удержана, повторная отправка через {seconds} с "
               "(/reject {id} вернёт средства)."),
    },
    "admin_low_funds": {
        "en": ("The hot wallet {address} cannot pay withdrawal #{id}: it has {token_balance} {symbol} "
               "({committed} {symbol} of it already on its way) and {native_balance} wei for gas. "
               "Approved withdrawals wait until it is topped up."),
        "ru": ("Горячий кошелёк {address} не может оплатить вывод #{id}: на нём {token_balance} {symbol} "
               "(из них {committed} {symbol} уже отправляются) и {native_balance} wei на газ. "
               "Одобренные выводы ждут пополнения."),
    },
    "notify_withdrawal_rejected_no_reason": {
        "en": "Withdrawal #{id} of {amount} {symbol} was rejected. {total} {symbol} returned to your balance.",
        "ru": "Вывод #{id} на {amount} {symbol} отклонён. {total} {symbol} возвращены на баланс.",
    },
    # --- statuses
    "status_PENDING": {"en": "waiting for the transfer", "ru": "ожидает перевода"},
    "status_PENDING_NETWORK_RECOVERY": {"en": "waiting for the network", "ru": "ожидает восстановления сети"},
    "status_CONFIRMED": {"en": "confirmed", "ru": "подтверждено"},
    "status_EXPIRED": {"en": "expired", "ru": "истекло"},
    "status_REQUESTED": {"en": "waiting for approval", "ru": "ожидает одобрения"},
    "status_APPROVED": {"en": "approved", "ru": "одобрено"},
    "status_SIGNED": {"en": "being sent", "ru": "отправляется"},
    "status_BROADCAST": {"en": "sent, waiting for confirmations", "ru": "отправлено, ждёт подтверждений"},
    "status_REJECTED": {"en": "rejected", "ru": "отклонено"},
    "status_FAILED": {"en": "failed, refunded", "ru": "не удалось, средства возвращены"},
    "status_CANCELLED": {"en": "cancelled", "ru": "отменено"},
    # --- admin
    "admin_pending_empty": {"en": "No withdrawals wait for approval.", "ru": "Нет выводов, ожидающих одобрения."},
    "admin_pending_item": {
        "en": "#{id} user {user_id}: {amount} {symbol} (fee {fee}) to {address}, {created}",
        "ru": "#{id} пользователь {user_id}: {amount} {symbol} (комиссия {fee}) на {address}, {created}",
    },
    "admin_approved": {"en": "Withdrawal #{id} approved.", "ru": "Вывод #{id} одобрен."},
    "admin_rejected": {"en": "Withdrawal #{id} rejected and refunded.", "ru": "Вывод #{id} отклонён, средства возвращены."},
    "admin_already": {"en": "Withdrawal #{id} is already {status}.", "ru": "Вывод #{id} уже в статусе {status}."},
    "admin_not_found": {"en": "Withdrawal #{id} does not exist.", "ru": "Вывода #{id} не существует."},
    "admin_usage": {"en": "Usage: {usage}", "ru": "Использование: {usage}"},
    "admin_banned": {"en": "User {user_id} is banned.", "ru": "Пользователь {user_id} заблокирован."},
    "admin_unbanned": {"en": "User {user_id} is unbanned.", "ru": "Пользователь {user_id} разблокирован."},
    "admin_not_banned": {"en": "User {user_id} was not banned.", "ru": "Пользователь {user_id} не был заблокирован."},
    "admin_cannot_ban_admin": {"en": "Admins cannot be banned.", "ru": "Администратора заблокировать нельзя."},
    "admin_levels": {"en": "Deposit levels (version {version}):\n{levels}", "ru": "Уровни пополнения (версия {version}):\n{levels}"},
    "admin_levels_set": {"en": "New deposit levels, version {version}:\n{levels}", "ru": "Новые уровни пополнения, версия {version}:\n{levels}"},
    "admin_bad_levels": {"en": "Invalid levels: {reason}", "ru": "Неверные уровни: {reason}"},
    "admin_settings": {"en": "Settings:\n{settings}", "ru": "Настройки:\n{settings}"},
    "admin_setting_saved": {"en": "{setting} = {value}", "ru": "{setting} = {value}"},
    "admin_bad_setting": {"en": "Invalid setting: {reason}", "ru": "Неверная настройка: {reason}"},
    "admin_stats": {
        "en": "Users: {users}\nTotal balances: {balances} {symbol}\nDeposits: {deposits}\nWithdrawals: {withdrawals}",
        "ru": "Пользователи: {users}\nСумма балансов: {balances} {symbol}\nПополнения: {deposits}\nВыводы: {withdrawals}",
    },
    "admin_status": {
        "en": ("Bot: running\nDatabase: {database}\nRedis: {redis}\nBlockchain maintenance: {maintenance}\n"
               "RPC (worker): {rpc}\nDeposits: {scan}\nHot wallet: {hot_wallet}\nNotifications waiting: {queued}"),
        "ru": ("Бот: работает\nБаза данных: {database}\nRedis: {redis}\nОбслуживание блокчейна: {maintenance}\n"
               "RPC (воркер): {rpc}\nДепозиты: {scan}\nГорячий кошелёк: {hot_wallet}\nУведомлений в очереди: {queued}"),
    },
    "maintenance_manual": {"en": "on (manual: BLOCKCHAIN_MAINTENANCE_MODE)", "ru": "включено (вручную: BLOCKCHAIN_MAINTENANCE_MODE)"},
    "maintenance_auto": {"en": "on (automatic: RPC failing, breaker {state})", "ru": "включено (автоматически: RPC недоступен, предохранитель {state})"},
    "unknown": {"en": "unknown", "ru": "неизвестно"},
    "scan_finalized": {
        "en": "credited through block {scanned}, finalized through {finalized} (credits up to it cannot be reorged away)",
        "ru": "зачислены по блок {scanned}, финализированы по {finalized} (эти зачисления уже не отменит реорганизация)",
    },
    "scan_no_finality": {
        "en": "credited through block {scanned}; the node reports no finalized block",
        "ru": "зачислены по блок {scanned}; узел не сообщает финализированный блок",
    },
    "funds_short": {"en": "SHORT of funds, withdrawals wait", "ru": "НЕ ХВАТАЕТ средств, выводы ждут"},
    "nonce_ahead": {
        "en": "STOPPED: {unknown} transaction(s) on chain the database does not know; run python dr.py reconcile",
        "ru": "ОСТАНОВЛЕН: в сети транзакций, неизвестных базе: {unknown}; выполните python dr.py reconcile",
    },
    "admin_assigned": {
        "en": "Deposit #{id} ({amount} {symbol}) credited to user {user_id}.",
        "ru": "Пополнение #{id} ({amount} {symbol}) зачислено пользователю {user_id}.",
    },
    "admin_assign_already": {
        "en": "Deposit #{id} already belongs to user {user_id}; nothing was credited now.",
        "ru": "Пополнение #{id} уже принадлежит пользователю {user_id}; сейчас ничего не зачислено.",
    },
    "admin_assign_not_found": {
        "en": "Deposit #{id} is not a recorded transfer.",
        "ru": "Пополнение #{id} не является записанным переводом.",
    },
    "admin_assign_no_user": {
        "en": "User {user_id} has not started the bot yet; nothing was credited.",
        "ru": "Пользователь {user_id} ещё не запускал бота; ничего не зачислено.",
    },
    "admin_deep_reorg": {
        "en": ("Deposit scanning stopped: block {block} changed after it was scanned (a reorganisation deeper "
               "than CONFIRMATIONS, or the RPC now points at another node). Deposits credited from the old blocks "
               "may be gone; check the node and those deposits. Nothing more is credited until then."),
        "ru": ("Сканирование пополнений остановлено: блок {block} изменился после сканирования (реорганизация "
               "глубже CONFIRMATIONS или RPC указывает на другой узел). Пополнения из старых блоков могут "
               "исчезнуть; проверьте узел и эти пополнения. До тех пор ничего не зачисляется."),
    },
    "admin_nonce_ahead": {
        "en": ("The hot wallet {address} has sent {unknown} transaction(s) the database does not know "
               "(chain nonce {chain_nonce}, database {known}), as after a restore from a backup. "
               "Withdrawals are stopped until an operator runs: python dr.py reconcile"),
        "ru": ("Горячий кошелёк {address} отправил транзакций, неизвестных базе данных: {unknown} "
               "(nonce в сети {chain_nonce}, в базе {known}), как после восстановления из резервной копии. "
               "Выводы остановлены, пока оператор не выполнит: python dr.py reconcile"),
    },
    "notify_sent_before_proof": {
        "en": ("Deposit #{id} of {amount} {symbol} from your wallet was sent before you proved the wallet, "
               "so it is not credited automatically; an admin will check it."),
        "ru": ("Пополнение #{id} на {amount} {symbol} с вашего кошелька отправлено до подтверждения кошелька, "
               "поэтому не зачислено автоматически; его проверит администратор."),
    },
    "notify_deposit_assigned": {
        "en": "Deposit #{id} of {amount} {symbol} was checked by an admin and credited. Balance: {balance} {symbol}.",
        "ru": "Пополнение #{id} на {amount} {symbol} проверено администратором и зачислено. Баланс: {balance} {symbol}.",
    },
    "admin_unattributed_empty": {"en": "No unattributed transfers.", "ru": "Нет неопознанных переводов."},
    "admin_unattributed_item": {
        "en": "#{id} {amount} {symbol} from {address}, tx {tx_hash}",
        "ru": "#{id} {amount} {symbol} от {address}, транзакция {tx_hash}",
    },
    "none": {"en": "none", "ru": "нет"},
    "ok": {"en": "ok", "ru": "в порядке"},
    "down": {"en": "DOWN", "ru": "НЕДОСТУПНА"},
    "on": {"en": "on", "ru": "включено"},
    "off": {"en": "off", "ru": "выключено"},
}


def t(language: str, key: str, **values) -> str:
    """The text for `key` in `language` (English when unknown), with placeholders filled."""
    entry = CATALOG[key]
    return entry.get(language, entry["en"]).format(**values)


def language_from_telegram(code: str | None, default: str) -> str:
    """The catalog language for Telegram's language_code: Russian for ru*, English otherwise."""
    if not code:
        return default
    return "ru" if code.lower().startswith("ru") else "en"


def scan_progress(status: dict, language: str) -> str:
    """How far the worker credited deposits, and how much of that the node calls finalized."""
    if status.get("scanned_block") is None:
        return t(language, "unknown")
    if status.get("finalized_block") is None:
        return t(language, "scan_no_finality", scanned=status["scanned_block"])
    return t(language, "scan_finalized", scanned=status["scanned_block"], finalized=status["finalized_block"])
